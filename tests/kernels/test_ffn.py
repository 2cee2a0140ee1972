"""Fused FFNs: SwiGLU (gate/up GEMM + SiLU*mul epilogue, down GEMM + residual) and GELU (GEMM + bias +
erf-GELU epilogue, down GEMM + bias + residual), plus the shared epilogue GEMM `linear`."""
import pytest
import torch
from .kernel_checks import DTYPES, assert_within_torch_error

from hlm_engine.kernels.gelu_ffn import gelu_ffn, gelu_ffn_ref
from hlm_engine.kernels.linear import linear, linear_ref
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn, swiglu_ffn_ref

# (tokens, hidden, intermediate): one token; 41 rows and odd widths that break every tile edge.
SHAPES = [pytest.param(1, 384, 64, id="T1-H384"), pytest.param(41, 769, 96, id="T41-H769-I96"),
          pytest.param(7, 1024, 160, id="T7-H1024-I160"), pytest.param(19, 768, 200, id="T19-H768-I200")]


def _w(*shape, g, dtype):
    return (torch.randn(*shape, generator=g) * shape[-1] ** -0.5).to(dtype)


@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("T,H,I", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_ffn(T, H, I, dtype, with_residual):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, H, generator=g).to(dtype)
    w_gu, w_d = _w(2 * I, H, g=g, dtype=dtype), _w(H, I, g=g, dtype=dtype)
    res = torch.randn(T, H, generator=g).to(dtype) if with_residual else None
    out = swiglu_ffn(x, w_gu, w_d, res)
    out_t = swiglu_ffn_ref(x, w_gu, w_d, res)
    out64 = swiglu_ffn_ref(x.double(), w_gu.double(), w_d.double(), None if res is None else res.double())
    assert_within_torch_error(out, out_t, out64, dtype, f"swiglu T={T} H={H} I={I}")


@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("T,H,I", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_ffn(T, H, I, dtype, with_residual):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, H, generator=g).to(dtype)
    w1, w2 = _w(I, H, g=g, dtype=dtype), _w(H, I, g=g, dtype=dtype)
    b1, b2 = (torch.randn(n, generator=g).to(dtype) for n in (I, H))
    res = torch.randn(T, H, generator=g).to(dtype) if with_residual else None
    out = gelu_ffn(x, w1, b1, w2, b2, res)
    out_t = gelu_ffn_ref(x, w1, b1, w2, b2, res)
    out64 = gelu_ffn_ref(*(t.double() for t in (x, w1, b1, w2, b2)), None if res is None else res.double())
    assert_within_torch_error(out, out_t, out64, dtype, f"gelu_ffn T={T} H={H} I={I}")


@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_linear_epilogues(activation):
    # 3-D input (leading dims are flattened), bias, residual and the GELU on negative and positive inputs.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 70, generator=g)
    w, b, res = torch.randn(33, 70, generator=g) * 0.2, torch.randn(33, generator=g), torch.randn(2, 5, 33)
    torch.testing.assert_close(linear(x, w, b, res, activation), linear_ref(x, w, b, res, activation))


def test_ffn_shape_errors():
    x = torch.randn(3, 16)
    with pytest.raises(ValueError, match="w_down"):
        swiglu_ffn(x, torch.randn(8, 16), torch.randn(16, 5))
    with pytest.raises(ValueError, match="weight"):
        linear(x, torch.randn(4, 15))
