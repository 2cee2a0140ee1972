"""Bucket padding for CUDA graphs (hlm_engine/models/cuda_graphs.py), checked on CPU: a batch padded into a
(batch, length) bucket gives its texts the same embeddings as the unpadded batch, on the reference ops and on
the Triton kernels (interpreter), for BERT, MPNet (relative bias) and Qwen3 (causal, GQA, last-token pooling).
The capture and replay themselves need a GPU: bench/gpu_check.sh times them there."""
import pytest
import torch

from hlm_engine.config import preset
from hlm_engine.kernels.pool import pool_ref
from hlm_engine.models import build_model
from hlm_engine.models.cuda_graphs import CudaGraphRunner, pad_to_bucket
from hlm_engine.models.packing import pack

TINY = {
    "bert": ("minilm-l6", dict(hidden_size=64, num_heads=2, num_kv_heads=2, head_dim=32)),
    "mpnet": ("mpnet-base", dict(hidden_size=64, num_heads=2, num_kv_heads=2, head_dim=32)),
    "qwen3": ("qwen3-190m", dict(hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16)),
}


def _model(arch, backend):
    name, kw = TINY[arch]
    cfg = preset(name, num_layers=1, intermediate_sizes=[96], vocab_size=120, **kw)
    torch.manual_seed(0)
    return cfg, build_model(cfg, backend).eval()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("arch", list(TINY))
def test_padding_into_a_bucket_leaves_the_texts_unchanged(arch, backend):
    cfg, model = _model(arch, backend)
    g = torch.Generator().manual_seed(1)
    batch = pack([torch.randint(3, 120, (n,), generator=g).tolist() for n in (5, 1, 11)])
    with torch.inference_mode():
        want = pool_ref(model(batch), batch.cu_seqlens, cfg.pooling)
        for bucket in [(3, 11), (4, 16), (8, 32)]:
            padded = pad_to_bucket(batch, *bucket, cfg.pad_token_id)
            assert padded.num_tokens == bucket[0] * bucket[1] and padded.num_seqs == 2 * bucket[0]
            lens = padded.cu_seqlens[1:] - padded.cu_seqlens[:-1]
            assert int(lens.max()) <= bucket[1] and int(lens.min()) >= 0
            got = pool_ref(model(padded), padded.cu_seqlens, cfg.pooling)[:batch.num_seqs]
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_bucket_choice_and_cpu_fallback():
    runner = CudaGraphRunner(lambda b: None, "cpu", buckets=[(1, 16), (8, 32), (1, 8)])
    assert runner.bucket_for(pack([[1] * 7])) == (1, 8)
    assert runner.bucket_for(pack([[1] * 9])) == (1, 16)
    assert runner.bucket_for(pack([[1] * 9, [2] * 3])) == (8, 32)
    assert runner.bucket_for(pack([[1] * 33])) is None
    assert runner(pack([[1] * 7])) is None  # no CUDA: the caller runs eagerly
    with pytest.raises(ValueError, match="does not fit"):
        pad_to_bucket(pack([[1] * 9]), 1, 8)
