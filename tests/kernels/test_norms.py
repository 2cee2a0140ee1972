"""Fused residual add + RMSNorm / LayerNorm kernels against their references."""
import pytest
import torch
from .kernel_checks import DTYPES, assert_within_torch_error

from hlm_engine.kernels.add_layernorm import add_layernorm, add_layernorm_ref
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm, add_rmsnorm_ref

# One token; 41 rows (not a multiple of the row tile); the model widths and 769 (not a power of two).
SHAPES = [pytest.param(1, 384, id="T1-H384"), pytest.param(41, 768, id="T41-H768"),
          pytest.param(41, 769, id="T41-H769"), pytest.param(7, 1024, id="T7-H1024")]


def _inputs(T, H, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    res = (3 * torch.randn(T, H, generator=g)).to(dtype)
    w = (1 + 0.1 * torch.randn(H, generator=g)).to(dtype)
    b = (0.1 * torch.randn(H, generator=g)).to(dtype)
    return x, res, w, b


@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("T,H", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rmsnorm(T, H, dtype, with_residual):
    x, res, w, _ = _inputs(T, H, dtype)
    res = res if with_residual else None
    out, r = add_rmsnorm(x, res, w, 1e-6)
    out_t, r_t = add_rmsnorm_ref(x, res, w, 1e-6)
    out64, _ = add_rmsnorm_ref(x.double(), None if res is None else res.double(), w.double(), 1e-6)
    assert_within_torch_error(out, out_t, out64, dtype, f"add_rmsnorm T={T} H={H}")
    # The new residual stream is x + residual rounded to the dtype, exactly as PyTorch rounds it.
    assert torch.equal(r, r_t)


@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("T,H", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_layernorm(T, H, dtype, with_residual):
    x, res, w, b = _inputs(T, H, dtype, seed=1)
    res = res if with_residual else None
    bias = b if with_residual else None  # also cover LayerNorm without bias
    out, r = add_layernorm(x, res, w, bias, 1e-12)
    out_t, r_t = add_layernorm_ref(x, res, w, bias, 1e-12)
    out64, _ = add_layernorm_ref(x.double(), None if res is None else res.double(), w.double(),
                                 None if bias is None else bias.double(), 1e-12)
    assert_within_torch_error(out, out_t, out64, dtype, f"add_layernorm T={T} H={H}")
    assert torch.equal(r, r_t)


def test_norms_accept_row_strided_views():
    # A column slice of a wider buffer: rows are strided, columns contiguous (the models' fused layouts).
    buf = torch.randn(9, 2 * 384)
    x, res = buf[:, :384], buf[:, 384:]
    w = torch.rand(384) + 0.5
    out, r = add_rmsnorm(x, res, w, 1e-6)
    out_t, r_t = add_rmsnorm_ref(x, res, w, 1e-6)
    torch.testing.assert_close(out, out_t)
    out, _ = add_layernorm(x, res, w, w, 1e-5)
    torch.testing.assert_close(out, add_layernorm_ref(x, res, w, w, 1e-5)[0])


def test_norm_shape_errors_name_the_argument():
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="weight"):
        add_rmsnorm(x, None, torch.ones(7), 1e-6)
    with pytest.raises(ValueError, match="residual"):
        add_layernorm(x, torch.randn(3, 9), torch.ones(8), None, 1e-6)


@pytest.mark.parametrize("T", [8, 300])
def test_rows_per_program_sized_to_the_sms(monkeypatch, T):
    """One row per program for a query on 132 SMs, several once every SM has one: same results."""
    import hlm_engine.kernels.add_layernorm as ln
    import hlm_engine.kernels.add_rmsnorm as rms
    for m in (ln, rms):
        monkeypatch.setattr(m, "num_sms", lambda device: 132)
    assert ln._block_rows(8, 512, 132) == 1 and ln._block_rows(1024, 512, 132) == 4
    x, res, w, b = _inputs(T, 384, torch.float32, seed=2)
    torch.testing.assert_close(add_layernorm(x, res, w, b, 1e-12)[0], add_layernorm_ref(x, res, w, b, 1e-12)[0])
    torch.testing.assert_close(add_rmsnorm(x, res, w, 1e-6)[0], add_rmsnorm_ref(x, res, w, 1e-6)[0])
