"""Linear layer with a fused epilogue: the projections, the GEMM of both FFN halves and the down projection.

x [M, K], w [N, K] (nn.Linear layout), b [N] or None, residual [M, N] or None:
    out = act(x @ W^T + b) (+ residual)        act = identity | exact erf GELU
The reference is the unfused PyTorch composition; the Triton kernels apply bias, activation and the
residual add to the fp32 accumulator tile before their single store. Two paths:
  - tiled GEMM (M > GEMV_MAX_ROWS): [BLOCK_M, BLOCK_N] output tiles, grouped ordering;
  - GEMV / split-K (M <= GEMV_MAX_ROWS, a query or a few): the weight stream is cut into [BLOCK_N, K/SPLIT_K]
    pieces, one per program, so every SM streams its share of W (batch 1 is weight-bandwidth bound).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors, launch, num_sms, row_major

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
    if dtype == torch.float32:
        # fp32 dots run on FMAs, whose operands sit in registers beside the accumulator: at 128 x 64 a
        # 4-warp program needed 254 registers and spilled (compile gate). Half the rows, twice the warps.
        block_m, block_n = min(block_m, 64), min(block_n, 64)
    while block_n > 32 and triton.cdiv(M, block_m) * triton.cdiv(N, block_n) < sms:
        block_n //= 2
    big = block_m * block_n * accumulators >= (64 * 32 if dtype == torch.float32 else 128 * 128)
    num_warps = 8 if big else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=32 if dtype == torch.float32 else 64, GROUP_M=GROUP_M,
                DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",  # fp32 stays fp32 (no TF32)
                num_warps=num_warps, num_stages=3)


def gemm_grid(M: int, N: int, meta: dict):
    return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


# --------------------------------------------------------------------------------------------- GEMV / split-K
# Batch 1 (Lin, "Stream-K", 2023; TensorRT-LLM's swap-AB for small M): with M <= 16 token rows a tile of
# 16+ rows would be mostly padding and the N tiles alone are too few to fill the GPU (MiniLM's 384-wide
# projections give 12-24). So the product is taken transposed, out^T [N, M] = W [N, K] x^T [K, M]: the weight
# rows fill the MMA's 16-row side and the tokens its 8-wide side (mma.m16n8k16), and K is split over
# SPLIT_K programs. Each writes its fp32 partial tile to a workspace; the last of a column's programs to
# arrive (an atomic counter per column tile) sums the partials in split order - deterministic, one launch -
# applies the epilogue, stores, and resets its counter to 0 for the next launch.
GEMV_MAX_ROWS = 16
_COUNTERS: dict = {}


@triton.jit
def _linear_gemv_kernel(x_ptr, w_ptr, b_ptr, res_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, K_PER_SPLIT, SPLIT_K,
                        stride_xm, stride_wn, stride_rm, stride_om, HAS_BIAS: tl.constexpr,
                        HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr, USE_SPLIT: tl.constexpr,
                        BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        DOT_PRECISION: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    k_lo = pid_k * K_PER_SPLIT
    k_hi = tl.minimum(K, k_lo + K_PER_SPLIT)
    # Edge rows wrap onto valid ones (% N, % M) so the loop masks only K; the store drops them.
    w_rows = (offs_n % N).to(tl.int64)
    w_ptrs = w_ptr + w_rows[:, None] * stride_wn + (k_lo + offs_k)[None, :]                  # [BLOCK_N, BLOCK_K]
    x_ptrs = x_ptr + (offs_t % M)[None, :].to(tl.int64) * stride_xm + (k_lo + offs_k)[:, None]  # x^T tile
    acc = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
    acc_u = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k_in = offs_k < k_hi - k0
        xt = tl.load(x_ptrs, mask=k_in[:, None], other=0.0)
        w = tl.load(w_ptrs, mask=k_in[None, :], other=0.0)
        acc = tl.dot(w, xt, acc, input_precision=DOT_PRECISION)
        if ACTIVATION == "swiglu":  # w rows [0, N) gate, [N, 2N) up: out = silu(g) * u
            wu = tl.load(w_ptrs + N * stride_wn, mask=k_in[None, :], other=0.0)
            acc_u = tl.dot(wu, xt, acc_u, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    last = pid_k == 0
    if USE_SPLIT:
        n_pad = tl.num_programs(0) * BLOCK_N
        tile = offs_n[:, None] * BLOCK_T + offs_t[None, :]
        ws_g = ws_ptr + tile
        ws_u = ws_ptr + SPLIT_K * n_pad * BLOCK_T + tile
        tl.store(ws_g + pid_k * n_pad * BLOCK_T, acc)
        if ACTIVATION == "swiglu":
            tl.store(ws_u + pid_k * n_pad * BLOCK_T, acc_u)
        tl.debug_barrier()  # every thread's partial is written before the counter says so
        last = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel") == SPLIT_K - 1
        if last:
            acc = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
            acc_u = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
            for s in range(0, SPLIT_K):  # fixed order: the sum does not depend on arrival order
                # .cg: read through L2, where the other programs' partials are (L1 is not coherent)
                acc += tl.load(ws_g + s * n_pad * BLOCK_T, cache_modifier=".cg")
                if ACTIVATION == "swiglu":
                    acc_u += tl.load(ws_u + s * n_pad * BLOCK_T, cache_modifier=".cg")
            tl.store(cnt_ptr + pid_n, 0)  # ready for the next launch (and the next CUDA-graph replay)
    if last:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[:, None]
        if ACTIVATION == "swiglu":
            acc = acc * tl.sigmoid(acc) * acc_u
        elif ACTIVATION == "gelu":
            acc = gelu_erf(acc)
        mask = (offs_n < N)[:, None] & (offs_t < M)[None, :]
        if HAS_RESIDUAL:
            acc += tl.load(res_ptr + offs_t[None, :].to(tl.int64) * stride_rm + offs_n[:, None], mask=mask,
                           other=0.0).to(tl.float32)
        tl.store(out_ptr + offs_t[None, :].to(tl.int64) * stride_om + offs_n[:, None],
                 acc.to(out_ptr.dtype.element_ty), mask=mask)


def gemv_blocks(M: int, N: int, K: int, dtype: torch.dtype, sms: int, gated: bool = False) -> tuple[dict, int, int]:
    """(meta, split_k, k_per_split). BLOCK_T: the tokens, 8 = the MMA's narrow side. BLOCK_N from 64 down to
    16 and the K split so that the programs cover every SM, each streaming whole BLOCK_K slabs of W."""
    block_t = max(8, triton.next_power_of_2(M))
    block_k = 64
    k_blocks = triton.cdiv(K, block_k)
    for block_n in (64, 32, 16):
        n_tiles = triton.cdiv(N, block_n)
        per = max(1, n_tiles * k_blocks // max(1, sms))  # K slabs per program
        split = triton.cdiv(k_blocks, per)
        if n_tiles * split >= sms:
            break
    meta = dict(BLOCK_T=block_t, BLOCK_N=block_n, BLOCK_K=block_k,
                DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32", num_warps=4, num_stages=3)
    return meta, split, per * block_k


def _counters(device, n: int) -> torch.Tensor:
    """Zeroed int32 arrival counters, one per column tile, kept per device (each launch leaves them at 0).
    Allocated on first use: warm up before capturing a CUDA graph. One stream at a time."""
    buf = _COUNTERS.get(str(device))
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[str(device)] = buf
    return buf


def gemv(x2, w, b, res2, out, activation: str):
    """Split-K launcher for x2 [M <= GEMV_MAX_ROWS, K]; activation "swiglu" reads w as [2N, K] (gate; up)."""
    M, K = x2.shape
    N = out.shape[1]
    gated = activation == "swiglu"
    meta, split, k_per = gemv_blocks(M, N, K, x2.dtype, num_sms(x2.device), gated)
    n_tiles = triton.cdiv(N, meta["BLOCK_N"])
    use_split = split > 1
    ws = (torch.empty(split * n_tiles * meta["BLOCK_N"] * meta["BLOCK_T"] * (2 if gated else 1),
                      dtype=torch.float32, device=x2.device) if use_split else out)
    cnt = _counters(x2.device, n_tiles) if use_split else out
    launch(_linear_gemv_kernel, (n_tiles, split), x2, w, b if b is not None else w,
           res2 if res2 is not None else out, out, ws, cnt, M, N, K, k_per, split, x2.stride(0), w.stride(0),
           res2.stride(0) if res2 is not None else 0, out.stride(0), HAS_BIAS=b is not None,
           HAS_RESIDUAL=res2 is not None, ACTIVATION=activation, USE_SPLIT=use_split,
           path="gemv-splitk" if use_split else "gemv", rows=M * n_tiles * split, tile_rows=meta["BLOCK_T"],
           **meta)
    return out


def linear(x, w, b=None, residual=None, activation="none"):
    """Triton launcher: x [..., K], w [N, K], b [N] | None, residual [..., N] | None -> [..., N] in x.dtype.
    <= GEMV_MAX_ROWS rows take the split-K GEMV path (>= 1 program per SM), more the tiled GEMM."""
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
    if M <= GEMV_MAX_ROWS:
        return gemv(x2, w, b, res2, out, activation).view(*lead, N)
    meta = gemm_blocks(M, N, x.dtype, num_sms(x.device))
    grid = gemm_grid(M, N, meta)
    launch(_linear_fwd_kernel, grid, x2, w, b if b is not None else w, res2 if res2 is not None else out, out,
           M, N, K, x2.stride(0), w.stride(0), res2.stride(0) if res2 is not None else 0, out.stride(0),
           HAS_BIAS=b is not None, HAS_RESIDUAL=residual is not None, ACTIVATION=activation, path="tiled",
           rows=M * triton.cdiv(N, meta["BLOCK_N"]), tile_rows=meta["BLOCK_M"], **meta)
    return out.view(*lead, N)
