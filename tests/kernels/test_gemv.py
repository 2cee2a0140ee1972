"""The split-K GEMV path of `linear` (<= 16 token rows): transposed tiles, partial sums reduced by the last
program of each column tile, every epilogue (bias, GELU, SwiGLU, residual). The interpreter counts one SM,
which never splits K, so these tests also pretend to fill 132 SMs (an H100) to run the split-K fixup."""
import pytest
import torch
from .kernel_checks import DTYPES, assert_within_torch_error

import hlm_engine.kernels.linear as lin
from hlm_engine.kernels.linear import gemv_blocks, linear, linear_ref
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn, swiglu_ffn_ref

# (rows, K, N): a single token, 7 and 16 rows, K not a multiple of BLOCK_K, N not a multiple of BLOCK_N.
SHAPES = [pytest.param(1, 384, 200, id="M1"), pytest.param(7, 449, 96, id="M7-K449"),
          pytest.param(16, 256, 130, id="M16-N130")]


@pytest.fixture(params=[1, 132], ids=["1sm", "132sm"])
def sms(request, monkeypatch):
    monkeypatch.setattr(lin, "num_sms", lambda device: request.param)
    return request.param


@pytest.mark.parametrize("activation,bias,residual", [("none", False, False), ("gelu", True, False),
                                                      ("none", True, True)], ids=["plain", "gelu-bias", "bias-res"])
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_linear(M, K, N, dtype, activation, bias, residual, sms):
    g = torch.Generator().manual_seed(M + K)
    x = torch.randn(M, K, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) * K ** -0.5).to(dtype)
    b = torch.randn(N, generator=g).to(dtype) if bias else None
    r = torch.randn(M, N, generator=g).to(dtype) if residual else None
    out = linear(x, w, b, r, activation)
    out_t = linear_ref(x, w, b, r, activation)
    out64 = linear_ref(x.double(), w.double(), None if b is None else b.double(),
                       None if r is None else r.double(), activation)
    assert_within_torch_error(out, out_t, out64, dtype, f"gemv M={M} K={K} N={N} {activation} sms={sms}")
    # The last program of each column tile leaves its arrival counter at 0 for the next launch.
    assert all(int(c.abs().sum()) == 0 for c in lin._COUNTERS.values())


@pytest.mark.parametrize("M", [1, 8])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_swiglu(M, dtype, sms):
    g = torch.Generator().manual_seed(M)
    H, I = 192, 160
    x = torch.randn(M, H, generator=g).to(dtype)
    w_gu, w_d = (torch.randn(2 * I, H, generator=g) * H ** -0.5).to(dtype), (torch.randn(H, I, generator=g) * I ** -0.5).to(dtype)
    res = torch.randn(M, H, generator=g).to(dtype)
    out = swiglu_ffn(x, w_gu, w_d, res)
    out64 = swiglu_ffn_ref(x.double(), w_gu.double(), w_d.double(), res.double())
    assert_within_torch_error(out, swiglu_ffn_ref(x, w_gu, w_d, res), out64, dtype, f"swiglu gemv M={M}")


@pytest.mark.parametrize("N,K,sms", [(1152, 384, 132), (384, 1536, 108), (4096, 1024, 132), (384, 384, 132)])
def test_gemv_blocks_fill_every_sm(N, K, sms):
    """The launch heuristic at the MiniLM / Qwen3 projection shapes: >= 1 program per SM at 8 tokens."""
    meta, split, k_per = gemv_blocks(8, N, K, torch.float16, sms)
    assert -(-N // meta["BLOCK_N"]) * split >= sms
    assert k_per % meta["BLOCK_K"] == 0 and split * k_per >= K > (split - 1) * k_per
    assert meta["BLOCK_T"] == 8  # the tokens sit on the MMA's 8-wide side: no padding rows
