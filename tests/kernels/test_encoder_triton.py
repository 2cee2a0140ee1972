"""The whole encoder forward through backend="triton" (Triton interpreter on CPU) matches backend="torch":
the real MiniLM student on short queries, and a random Qwen3 at the real 0.6B head shapes (hidden 1024,
16 q / 8 kv heads, head_dim 128), kept to 2 layers and a narrow FFN so the interpreter stays quick."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hlm_engine import Encoder
from hlm_engine.config import preset
from hlm_engine.models import resolve

QUERIES = ["cordless drill", "white shaker kitchen cabinet doors 36 in", "1/2 in. pvc pipe"]


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_minilm_triton_matches_torch(minilm):
    enc = Encoder.from_pretrained("minilm", backend="triton")
    assert enc.backend == "triton"
    got, want = enc.encode(QUERIES), minilm.encode(QUERIES)
    cos = _cosines(got, want)
    assert cos.min() >= 0.9999, f"MiniLM triton vs torch cosines {cos}"
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_qwen3_real_head_shapes_triton_matches_torch():
    cfg = preset("qwen3-190m", num_layers=2, intermediate_sizes=[256, 256], vocab_size=30522, max_length=64)
    tok = os.path.join(resolve("minilm"), "tokenizer.json")
    ref = Encoder.from_config(cfg, tok, backend="torch", dtype=torch.float32, seed=0)
    enc = Encoder.from_config(cfg, tok, backend="triton", dtype=torch.float32, seed=0)
    # Break the symmetry of the init (unit norm weights, tiny projections) so attention is far from uniform
    # and every kernel's contribution shows in the output; both models get the same weights.
    g = torch.Generator().manual_seed(1)
    sd = ref.model.state_dict()
    for name, p in sd.items():
        if "q_norm" in name or "k_norm" in name:
            sd[name] = 0.5 + 2.5 * torch.rand(p.shape, generator=g)
        elif name.endswith("qkv.weight") or name.endswith("gate_up.weight"):
            sd[name] = torch.randn(p.shape, generator=g) * p.shape[1] ** -0.5
    ref.model.load_state_dict(sd)
    enc.model.load_state_dict(sd)
    g = torch.Generator().manual_seed(2)
    ids = [torch.randint(1000, 30000, (n,), generator=g).tolist() for n in (9, 1, 17, 4)]
    got, want = enc.embed_ids(ids), ref.embed_ids(ids)
    cos = _cosines(got, want)
    assert cos.min() >= 0.9999, f"Qwen3 triton vs torch cosines {cos}"
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_triton_on_cpu_without_interpreter_raises_clearly():
    # A fresh interpreter: the interpreter mode is fixed when triton kernels are first defined.
    code = ("import torch\n"
            "from hlm_engine import ops\n"
            "from hlm_engine.kernels.add_rmsnorm import add_rmsnorm\n"
            "for f in (lambda: ops.resolve_backend('triton', 'cpu'),\n"
            "          lambda: add_rmsnorm(torch.ones(2, 8), None, torch.ones(8), 1e-6)):\n"
            "    try:\n"
            "        f()\n"
            "    except RuntimeError as e:\n"
            "        assert 'TRITON_INTERPRET=1' in str(e), e\n"
            "    else:\n"
            "        raise SystemExit('no error raised')\n")
    env = dict(os.environ, TRITON_INTERPRET="0", HLM_BACKEND="auto")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]


@pytest.mark.parametrize("op", ["add_rmsnorm", "pool"])
def test_ops_seam_dispatches_to_triton(op):
    # ops.<name>(backend="triton") reaches the kernel (CPU tensors only run there under the interpreter).
    from hlm_engine import ops
    x = torch.randn(5, 40)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    if op == "add_rmsnorm":
        got = ops.add_rmsnorm(x, x, torch.ones(40), 1e-6, backend="triton")[0]
        want = ops.add_rmsnorm(x, x, torch.ones(40), 1e-6, backend="torch")[0]
    else:
        got = ops.pool(x, cu, "mean", 16, True, backend="triton")
        want = ops.pool(x, cu, "mean", 16, True, backend="torch")
    torch.testing.assert_close(got, want)
