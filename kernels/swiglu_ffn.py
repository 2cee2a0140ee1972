"""SwiGLU feed-forward with the residual add (Qwen3/Qwen2 MLP).

x [T, H], w_gate_up [2I, H] (rows 0..I-1 = gate, I..2I-1 = up), w_down [H, I], residual [T, H] or None:
    out = (silu(x @ Wg^T) * (x @ Wu^T)) @ Wd^T (+ residual)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors, launch, num_sms, row_major
from .linear import GEMV_MAX_ROWS, gemm_blocks, gemm_grid, gemv, linear, tile_ids


def swiglu_ffn_ref(x, w_gate_up, w_down, residual=None):
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    out = F.linear(F.silu(gate) * up, w_down)
    return out if residual is None else out + residual


# --------------------------------------------------------------------------------------------- Triton
# Two kernels (Liger/Unsloth-style fusion, but with the activation inside the GEMM):
#   1. gate/up GEMM: each program computes the matching [BLOCK_M, BLOCK_N] tiles of x Wg^T and x Wu^T from
#      the same x tile (two fp32 accumulators, one pass over x), then stores silu(g) * u: the [T, 2I]
#      gate/up activations never reach HBM, only the [T, I] product does.
#   2. down GEMM (`linear`): h Wd^T with the residual add in its epilogue.
# At <= GEMV_MAX_ROWS token rows (a query) the gate/up product takes linear's split-K GEMV path instead, with
# silu(g) * u applied after the split reduction: the weight stream is spread over every SM.


@triton.jit
def _swiglu_gate_up_fwd_kernel(x_ptr, w_ptr, h_ptr, M, I, K, stride_xm, stride_wn, stride_hm,
                               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                               GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr):
    pid_m, pid_n = tile_ids(M, I, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Edge rows/columns wrap onto valid ones (masked at the store), so the K loop masks only K.
    x_ptrs = x_ptr + (offs_m % M)[:, None].to(tl.int64) * stride_xm + offs_k[None, :]
    cols = offs_n % I
    gate_ptrs = w_ptr + cols[None, :].to(tl.int64) * stride_wn + offs_k[:, None]          # rows 0..I-1
    up_ptrs = w_ptr + (cols + I)[None, :].to(tl.int64) * stride_wn + offs_k[:, None]      # rows I..2I-1
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(x_ptrs, mask=offs_k[None, :] < K - k0, other=0.0)
        wg = tl.load(gate_ptrs, mask=offs_k[:, None] < K - k0, other=0.0)
        wu = tl.load(up_ptrs, mask=offs_k[:, None] < K - k0, other=0.0)
        acc_g = tl.dot(a, wg, acc_g, input_precision=DOT_PRECISION)
        acc_u = tl.dot(a, wu, acc_u, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        gate_ptrs += BLOCK_K
        up_ptrs += BLOCK_K
    mask_m = offs_m < M
    mask_n = offs_n < I
    h = acc_g * tl.sigmoid(acc_g) * acc_u   # silu(g) * u on the fp32 accumulators
    tl.store(h_ptr + offs_m[:, None].to(tl.int64) * stride_hm + offs_n[None, :], h.to(h_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


def swiglu_ffn(x, w_gate_up, w_down, residual=None):
    """Triton launcher: x [..., H], w_gate_up [2I, H], w_down [H, I], residual [..., H] | None -> [..., H]."""
    H = x.shape[-1]
    if w_gate_up.dim() != 2 or w_gate_up.shape[1] != H or w_gate_up.shape[0] % 2:
        raise ValueError(f"swiglu_ffn: w_gate_up {tuple(w_gate_up.shape)} must be [2I, {H}]")
    I = w_gate_up.shape[0] // 2
    if w_down.shape != (H, I):
        raise ValueError(f"swiglu_ffn: w_down {tuple(w_down.shape)} must be ({H}, {I})")
    check_tensors("swiglu_ffn", x=x, w_gate_up=w_gate_up, w_down=w_down, residual=residual)
    check_dtype("swiglu_ffn", "x", x)
    if w_gate_up.dtype != x.dtype:
        raise TypeError(f"swiglu_ffn: x is {x.dtype} but w_gate_up is {w_gate_up.dtype}")
    lead = x.shape[:-1]
    x2 = row_major(x.reshape(-1, H))
    w_gate_up = row_major(w_gate_up)
    M = x2.shape[0]
    h = torch.empty((M, I), dtype=x.dtype, device=x.device)
    if M and M <= GEMV_MAX_ROWS:
        gemv(x2, w_gate_up, None, None, h, "swiglu")
    elif M:
        meta = gemm_blocks(M, I, x.dtype, num_sms(x.device), accumulators=2)
        launch(_swiglu_gate_up_fwd_kernel, gemm_grid(M, I, meta), x2, w_gate_up, h, M, I, H, x2.stride(0),
               w_gate_up.stride(0), h.stride(0), path="tiled", rows=M * triton.cdiv(I, meta["BLOCK_N"]),
               tile_rows=meta["BLOCK_M"], **meta)
    res2 = None if residual is None else residual.reshape(-1, H)
    return linear(h, w_down, None, res2).view(*lead, H)
