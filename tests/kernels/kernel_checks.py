"""Shared helpers for the kernel tests (run on CPU under TRITON_INTERPRET=1, set by the root conftest).

Tolerance rule (flash-attention's): a kernel may be at most twice as far from the fp64 reference as
PyTorch itself is when it runs the same op in the same low precision, plus a small per-dtype floor:
    max|kernel - ref_fp64| <= 2 * max|torch_dtype - ref_fp64| + ATOL[dtype]
bf16 is not tested here: the interpreter's bf16 tl.dot is wrong (GPU-only dtype).
"""
import pytest
import torch

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3}
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16")]


def packed(lens):
    """cu_seqlens [B+1] int32 and within-sequence positions [T] int64 for sequence lengths `lens`."""
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lens, dtype=torch.int32), 0)
    pos = torch.cat([torch.arange(n) for n in lens])
    return cu, pos


def assert_within_torch_error(out, torch_out, ref64, dtype, what=""):
    """out: kernel result; torch_out: the PyTorch reference run in `dtype`; ref64: the reference in fp64."""
    assert out.shape == ref64.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref64.shape)}"
    assert out.dtype == dtype, f"{what}: dtype {out.dtype}, expected {dtype}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values in the kernel output"
    err = (out.double() - ref64).abs().max().item()
    torch_err = (torch_out.double() - ref64).abs().max().item()
    bound = 2 * torch_err + ATOL[dtype]
    assert err <= bound, (f"{what}: max|kernel - fp64 ref| = {err:.3g} > 2 * {torch_err:.3g} (PyTorch {dtype} error) "
                          f"+ {ATOL[dtype]:g}")
