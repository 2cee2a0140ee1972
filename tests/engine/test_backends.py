"""Backends chosen once, each checked against the reference on the same inputs.

`torch` is the pure PyTorch reference (the session fixtures `minilm`/`mpnet` are built on it and checked
against sentence-transformers in test_reference_parity.py); `cpu` (our C++ kernels and packed GEMMs) must
give the same embeddings; `triton` is checked in tests/kernels/test_encoder_triton.py (interpreter)."""
import numpy as np
import pytest
import torch

from hlm_engine import ops
from hlm_engine.ops.cpu import CpuBackend
from hlm_engine.ops.cpu import ext
from hlm_engine.retrieval.data import SAMPLE_DIR, read_tsv

needs_ext = pytest.mark.skipif(not ext.available(), reason=f"cpu backend unavailable here: {ext.WHY}")


@pytest.fixture(scope="module")
def texts():
    titles = read_tsv(f"{SAMPLE_DIR}/products.tsv", ["title"])["title"]
    queries = read_tsv(f"{SAMPLE_DIR}/queries_dev.tsv", ["query"])["query"]
    longest = sorted(titles, key=len, reverse=True)[:4]
    return queries[:40] + titles[:40] + longest + ["x"]


def test_torch_means_the_reference(minilm):
    assert minilm.backend == "torch" and type(minilm.ops).__name__ == "TorchBackend"
    assert ops.resolve_backend("torch", "cuda") == "torch"


def test_choice_is_validated():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        ops.resolve_backend("fast", "cpu")
    with pytest.raises(RuntimeError, match="runs on the CPU only"):
        ops.resolve_backend("cpu", "cuda")


@needs_ext
def test_auto_on_cpu_is_the_cpu_backend():
    assert ops.resolve_backend("auto", "cpu") == "cpu"
    assert ops.get("cpu") is ops.get("cpu")  # built once


@needs_ext
@pytest.mark.parametrize("name", ["minilm", "mpnet"])
@pytest.mark.parametrize("batch_size", [1, 64])
def test_cpu_backend_matches_reference(name, batch_size, texts, request):
    ref = request.getfixturevalue(name)
    for backend in (CpuBackend(), CpuBackend(gemm="onednn", kernels=True), CpuBackend(gemm="mkl", kernels=False)):
        enc = ref.with_backend(backend)
        assert enc.backend == "cpu" and ref.backend == "torch"  # the reference encoder is untouched
        with torch.inference_mode():
            got = enc.encode(texts, batch_size=batch_size)
        want = ref.encode(texts, batch_size=batch_size)
        cos = (got.astype(np.float64) * want).sum(1)
        assert cos.min() >= 0.99999, f"{name} {backend!r} batch {batch_size}: min cos {cos.min():.7f}"
