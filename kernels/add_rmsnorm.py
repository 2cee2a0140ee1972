"""Fused residual add + RMSNorm (pre-norm decoders such as Qwen3).

    r = x + residual            (r = x when residual is None)
    out = r / sqrt(mean(r^2) + eps) * weight
Returns (out, r): the normalised activations and the new residual stream. Shapes: x, residual [T, H].
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors, launch, num_sms, pow2_floor, row_major


def add_rmsnorm_ref(x, residual, weight, eps, upcast=True):
    r = x if residual is None else x + residual
    rf = r.float() if upcast else r
    out = rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.to(out.dtype)).to(x.dtype), r


def rmsnorm_ref(x, weight, eps):
    return add_rmsnorm_ref(x, None, weight, eps)[0]


# --------------------------------------------------------------------------------------------- Triton
# One program per tile of token rows; each whole row (H <= 16k) fits in registers, so the add, the sum of
# squares and the scaled store are one pass over HBM: read x and residual once, write out and r once.

MAX_FUSED_H = 16384
ROW_TILE = 4096  # elements per program tile


@triton.jit
def _add_rmsnorm_fwd_kernel(x_ptr, res_ptr, w_ptr, out_ptr, r_out_ptr, T, H, stride_x, stride_res, stride_out,
                            stride_r_out, eps, HAS_RESIDUAL: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                            BLOCK_H: tl.constexpr):
    # int64 rows: row * stride overflows int32 past 2^31 elements
    row = (tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_H)[None, :]
    mask = (row < T) & (cols < H)
    r = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        # The residual stream is rounded to the input dtype, exactly as `x + residual` is in PyTorch.
        r = r + tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0)
        tl.store(r_out_ptr + row * stride_r_out + cols, r, mask=mask)
    rf = r.to(tl.float32)
    inv_rms = 1.0 / tl.sqrt(tl.sum(rf * rf, axis=1)[:, None] / H + eps)
    w = tl.load(w_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (rf * inv_rms * w).to(out_ptr.dtype.element_ty), mask=mask)


def _block_rows(T: int, block_h: int, sms: int) -> int:
    """Rows per program, sized to the rows: one row per program while the rows do not cover every SM (a query
    of 8 tokens is 8 programs), more rows per program once they do (up to ROW_TILE elements). Below one
    program per SM for T < SMs rows: a row is one reduction, and splitting a 1-4 KB row over programs would
    cost a second pass or an atomic for less than a microsecond of reading."""
    return max(1, min(16, ROW_TILE // block_h, pow2_floor(T // max(1, sms))))


def _grid(T, block_rows):
    return (triton.cdiv(T, block_rows),)


def _num_warps(block_h: int) -> int:
    # ~8 fp32 values per thread keeps the row in registers without spilling.
    return max(1, min(16, block_h // 256))


def add_rmsnorm(x, residual, weight, eps):
    """Triton launcher: x, residual [..., H] (residual may be None), weight [H] -> (out, x + residual)."""
    H = x.shape[-1]
    if weight.shape != (H,):
        raise ValueError(f"add_rmsnorm: weight has shape {tuple(weight.shape)}, expected ({H},)")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"add_rmsnorm: residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    if H > MAX_FUSED_H:
        raise ValueError(f"add_rmsnorm: hidden size {H} > {MAX_FUSED_H} does not fit one program's row")
    check_tensors("add_rmsnorm", x=x, residual=residual, weight=weight)
    check_dtype("add_rmsnorm", "x", x)
    lead = x.shape[:-1]
    x2 = row_major(x.reshape(-1, H))
    res2 = None if residual is None else row_major(residual.reshape(-1, H))
    T = x2.shape[0]
    out = torch.empty((T, H), dtype=x.dtype, device=x.device)
    r_out = torch.empty_like(out) if residual is not None else None
    if T:
        block_h = triton.next_power_of_2(H)
        block_rows = _block_rows(T, block_h, num_sms(x.device))
        launch(_add_rmsnorm_fwd_kernel, _grid(T, block_rows),
            x2, res2 if res2 is not None else x2, weight, out, r_out if r_out is not None else out, T, H,
            x2.stride(0), res2.stride(0) if res2 is not None else 0, out.stride(0),
            r_out.stride(0) if r_out is not None else 0, eps,
            HAS_RESIDUAL=residual is not None, BLOCK_ROWS=block_rows, BLOCK_H=block_h,
            num_warps=_num_warps(block_h * block_rows), path="rows",
            rows=T, tile_rows=block_rows)
    r = x if residual is None else r_out.view(*lead, H)
    return out.view(*lead, H), r
