"""q/k per-head RMSNorm + RoPE on packed tokens, read from the fused qkv projection as Qwen3 does."""
import pytest
import torch
from .kernel_checks import DTYPES, assert_within_torch_error, packed

from hlm_engine.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref

# (Hq, Hkv, head_dim): GQA ratios 1/2/8 at head_dim 32/64/128; 80 is not a power of two.
HEADS = [pytest.param(4, 4, 32, id="mha-d32"), pytest.param(8, 4, 64, id="gqa2-d64"),
         pytest.param(16, 2, 128, id="gqa8-d128"), pytest.param(2, 1, 80, id="d80")]


@pytest.mark.parametrize("norm", [True, False], ids=["qwen3-norm", "qwen2-no-norm"])
@pytest.mark.parametrize("Hq,Hkv,D", HEADS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qk_norm_rope(Hq, Hkv, D, norm, dtype):
    g = torch.Generator().manual_seed(0)
    lens = [1, 7, 13]  # one program per token: positions, not lengths, matter here
    _, pos = packed(lens)
    pos[-1] = 30000  # a long-context position: angles must be computed in fp32
    T = sum(lens)
    qkv = torch.randn(T, (Hq + 2 * Hkv) * D, generator=g).to(dtype)
    q = qkv[:, :Hq * D].view(T, Hq, D)            # strided views, as the model slices them
    k = qkv[:, Hq * D:(Hq + Hkv) * D].view(T, Hkv, D)
    q_w, k_w = ((1 + 0.2 * torch.randn(D, generator=g)).to(dtype) for _ in range(2)) if norm else (None, None)
    args = (pos, 1_000_000.0, 1e-6)
    qo, ko = qk_norm_rope(q, k, q_w, k_w, *args)
    qt, kt = qk_norm_rope_ref(q, k, q_w, k_w, *args)
    q64, k64 = qk_norm_rope_ref(q.double(), k.double(), None if q_w is None else q_w.double(),
                                None if k_w is None else k_w.double(), *args)
    assert_within_torch_error(qo, qt, q64, dtype, f"q Hq={Hq} D={D}")
    assert_within_torch_error(ko, kt, k64, dtype, f"k Hkv={Hkv} D={D}")


def test_rope_rejects_odd_head_dim():
    q = torch.randn(2, 1, 33)
    with pytest.raises(ValueError, match="even"):
        qk_norm_rope(q, q, None, None, torch.arange(2), 10000.0, 1e-6)


def test_one_head_row_per_program(monkeypatch):
    """On a GPU a short query gets one head row per program (rows sized to the SMs); same result."""
    import hlm_engine.kernels.qk_norm_rope as m
    monkeypatch.setattr(m, "num_sms", lambda device: 132)
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(8, 16, 64, generator=g), torch.randn(8, 8, 64, generator=g)
    q_w, k_w = torch.rand(64, generator=g) + 0.5, torch.rand(64, generator=g) + 0.5
    args = (q, k, q_w, k_w, torch.arange(8), 1e6, 1e-6)
    for got, want in zip(qk_norm_rope(*args), qk_norm_rope_ref(*args)):
        torch.testing.assert_close(got, want)
