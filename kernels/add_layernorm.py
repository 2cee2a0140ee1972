"""Fused residual add + LayerNorm (post-norm encoders such as BERT and MPNet).

    r = x + residual            (r = x when residual is None)
    out = (r - mean(r)) / sqrt(var(r) + eps) * weight + bias
Returns (out, r). Shapes: x, residual [T, H]; weight, bias [H].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors, launch, num_sms, pow2_floor, row_major


def add_layernorm_ref(x, residual, weight, bias, eps, upcast=False):
    r = x if residual is None else x + residual
    rf = r.float() if upcast else r
    out = F.layer_norm(rf, (r.shape[-1],), weight.to(rf.dtype), None if bias is None else bias.to(rf.dtype), eps)
    return out.to(x.dtype), r


# --------------------------------------------------------------------------------------------- Triton
# One program per tile of token rows (each row fits in registers): the residual add, the two moments and the affine
# store happen in one read and one write of the row. Moments are taken in fp32 around the mean (two-pass
# in registers), which avoids the cancellation of E[x^2] - E[x]^2.

MAX_FUSED_H = 16384
ROW_TILE = 4096  # elements per program tile


@triton.jit
def _add_layernorm_fwd_kernel(x_ptr, res_ptr, w_ptr, b_ptr, out_ptr, r_out_ptr, T, H, stride_x, stride_res,
                              stride_out, stride_r_out, eps, HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                              BLOCK_ROWS: tl.constexpr, BLOCK_H: tl.constexpr):
    # int64 rows: row * stride overflows int32 past 2^31 elements
    row = (tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_H)[None, :]
    mask = (row < T) & (cols < H)
    r = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = r + tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0)  # rounded like torch's add
        tl.store(r_out_ptr + row * stride_r_out + cols, r, mask=mask)
    rf = r.to(tl.float32)
    mean = tl.sum(rf, axis=1)[:, None] / H
    centered = tl.where(mask, rf - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1)[:, None] / H + eps)
    y = centered * rstd * tl.load(w_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def _block_rows(T: int, block_h: int, sms: int) -> int:
    """Rows per program, sized to the rows: one row per program while the rows do not cover every SM (a query
    of 8 tokens is 8 programs), more rows per program once they do (up to ROW_TILE elements). Below one
    program per SM for T < SMs rows: a row is one reduction, and splitting a 1-4 KB row over programs would
    cost a second pass or an atomic for less than a microsecond of reading."""
    return max(1, min(16, ROW_TILE // block_h, pow2_floor(T // max(1, sms))))


def _grid(T, block_rows):
    return (triton.cdiv(T, block_rows),)


def _num_warps(block_h: int) -> int:
    return max(1, min(16, block_h // 256))


def add_layernorm(x, residual, weight, bias, eps):
    """Triton launcher: x, residual [..., H] (residual may be None), weight/bias [H] -> (out, x + residual)."""
    H = x.shape[-1]
    if weight.shape != (H,) or (bias is not None and bias.shape != (H,)):
        raise ValueError(f"add_layernorm: weight {tuple(weight.shape)} / bias "
                         f"{None if bias is None else tuple(bias.shape)} must both be ({H},)")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"add_layernorm: residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    if H > MAX_FUSED_H:
        raise ValueError(f"add_layernorm: hidden size {H} > {MAX_FUSED_H} does not fit one program's row")
    check_tensors("add_layernorm", x=x, residual=residual, weight=weight, bias=bias)
    check_dtype("add_layernorm", "x", x)
    lead = x.shape[:-1]
    x2 = row_major(x.reshape(-1, H))
    res2 = None if residual is None else row_major(residual.reshape(-1, H))
    T = x2.shape[0]
    out = torch.empty((T, H), dtype=x.dtype, device=x.device)
    r_out = torch.empty_like(out) if residual is not None else None
    if T:
        block_h = triton.next_power_of_2(H)
        block_rows = _block_rows(T, block_h, num_sms(x.device))
        launch(_add_layernorm_fwd_kernel, _grid(T, block_rows),
            x2, res2 if res2 is not None else x2, weight, bias if bias is not None else weight, out,
            r_out if r_out is not None else out, T, H, x2.stride(0), res2.stride(0) if res2 is not None else 0,
            out.stride(0), r_out.stride(0) if r_out is not None else 0, eps,
            HAS_RESIDUAL=residual is not None, HAS_BIAS=bias is not None, BLOCK_ROWS=block_rows,
            BLOCK_H=block_h, num_warps=_num_warps(block_h * block_rows), path="rows",
            rows=T, tile_rows=block_rows)
    r = x if residual is None else r_out.view(*lead, H)
    return out.view(*lead, H), r
