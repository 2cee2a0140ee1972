"""Linear layer with a fused epilogue: the GEMM of both FFN halves and the down projection.

x [M, K], w [N, K] (nn.Linear layout), b [N] or None, residual [M, N] or None:
    out = act(x @ W^T + b) (+ residual)        act = identity | exact erf GELU
The reference is the unfused PyTorch composition; the Triton kernel applies bias, activation and the
residual add to the fp32 accumulator tile before its single store.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors, num_sms, row_major

ACTIVATIONS = ("none", "gelu")


def linear_ref(x, w, b=None, residual=None, activation="none"):
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; supported: {', '.join(ACTIVATIONS)}")
    out = F.linear(x, w, b)
    out = F.gelu(out) if activation == "gelu" else out
    return out if residual is None else out + residual


# --------------------------------------------------------------------------------------------- Triton
# Tiled GEMM (Triton tutorial 03 structure): program (pid_m, pid_n) owns one [BLOCK_M, BLOCK_N] output tile
# and walks K in BLOCK_K steps. Programs are ordered in GROUP_M-tall column groups so consecutive programs
# reuse the same weight tiles from L2. The epilogue runs on the fp32 accumulator, so the pre-activation and
# the pre-residual sums are never rounded to the storage dtype nor written to HBM.


@triton.jit
def tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped ordering of a 1-D launch over the [cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)] tile grid."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    return pid_m, pid_n


@triton.jit
def gelu_erf(x):
    """Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as BERT and F.gelu use (not the tanh fit)."""
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def _linear_fwd_kernel(x_ptr, w_ptr, b_ptr, res_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_rm,
                       stride_om, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr):
    pid_m, pid_n = tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows/columns past the edge wrap onto valid ones (% M, % N) so the K loop needs only the K mask;
    # their results are discarded by the masked store.
    x_ptrs = x_ptr + (offs_m % M)[:, None].to(tl.int64) * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + (offs_n % N)[None, :].to(tl.int64) * stride_wn + offs_k[:, None]  # W^T tile from [N, K]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(x_ptrs, mask=offs_k[None, :] < K - k0, other=0.0)
        w = tl.load(w_ptrs, mask=offs_k[:, None] < K - k0, other=0.0)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    mask_m = offs_m < M
    mask_n = offs_n < N
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if ACTIVATION == "gelu":
        acc = gelu_erf(acc)
    mask = mask_m[:, None] & mask_n[None, :]
    if HAS_RESIDUAL:
        acc += tl.load(res_ptr + offs_m[:, None].to(tl.int64) * stride_rm + offs_n[None, :], mask=mask,
                       other=0.0).to(tl.float32)
    tl.store(out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask)


GROUP_M = 8


def gemm_blocks(M: int, N: int, dtype: torch.dtype, sms: int, accumulators: int = 1) -> dict:
    """Deterministic tile choice. BLOCK_M follows the token count (16 for one short query, 128 for big
    batches). BLOCK_N starts at 128 (64 when several accumulators share the registers: SwiGLU keeps two)
    and halves, down to 32, until the tiles cover every SM: a batch-1 query has a single row of tiles, and
    wide tiles would leave most of the GPU idle on a weight-bandwidth-bound GEMM."""
    block_m = min(128, max(16, triton.next_power_of_2(M)))
    block_n = 128 if block_m * accumulators <= 64 else 64
    while block_n > 32 and triton.cdiv(M, block_m) * triton.cdiv(N, block_n) < sms:
        block_n //= 2
    num_warps = 8 if block_m * block_n * accumulators >= 128 * 128 else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=64, GROUP_M=GROUP_M,
                DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",  # fp32 stays fp32 (no TF32)
                num_warps=num_warps, num_stages=3)


def gemm_grid(M: int, N: int, meta: dict):
    return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


def linear(x, w, b=None, residual=None, activation="none"):
    """Triton launcher: x [..., K], w [N, K], b [N] | None, residual [..., N] | None -> [..., N] in x.dtype."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; supported: {', '.join(ACTIVATIONS)}")
    K = x.shape[-1]
    if w.dim() != 2 or w.shape[1] != K:
        raise ValueError(f"linear: weight {tuple(w.shape)} must be [N, {K}] for input {tuple(x.shape)}")
    N = w.shape[0]
    lead = x.shape[:-1]
    if b is not None and b.shape != (N,):
        raise ValueError(f"linear: bias {tuple(b.shape)} must be ({N},)")
    if residual is not None and residual.shape != (*lead, N):
        raise ValueError(f"linear: residual {tuple(residual.shape)} must be {(*lead, N)}")
    check_tensors("linear", x=x, w=w, b=b, residual=residual)
    check_dtype("linear", "x", x)
    if w.dtype != x.dtype:
        raise TypeError(f"linear: x is {x.dtype} but the weight is {w.dtype}")
    x2 = row_major(x.reshape(-1, K))
    w = row_major(w)
    res2 = None if residual is None else row_major(residual.reshape(-1, N))
    M = x2.shape[0]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out.view(*lead, N)
    meta = gemm_blocks(M, N, x.dtype, num_sms(x.device))
    _linear_fwd_kernel[gemm_grid(M, N, meta)](
        x2, w, b if b is not None else w, res2 if res2 is not None else out, out, M, N, K, x2.stride(0),
        w.stride(0), res2.stride(0) if res2 is not None else 0, out.stride(0), HAS_BIAS=b is not None,
        HAS_RESIDUAL=residual is not None, ACTIVATION=activation, **meta)
    return out.view(*lead, N)
