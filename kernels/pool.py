"""Sequence pooling over packed tokens, then Matryoshka truncation and L2 normalisation.

hidden [T, H], cu_seqlens [B+1] -> [B, dim or H]:
    mean: sum of the sequence's tokens / length;  cls: its first token;  last: its last token (EOS)
    then keep the first `dim` features (Matryoshka) and, if `normalize`, divide by the L2 norm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors, launch, row_major

MODES = ("mean", "cls", "last")


def truncate_normalize(x, dim=None, normalize=True):
    if dim is not None:
        x = x[:, :dim]
    return F.normalize(x.float(), dim=-1).to(x.dtype) if normalize else x


def pool_ref(hidden, cu_seqlens, mode, dim=None, normalize=True):
    if mode not in MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; supported: {', '.join(MODES)}")
    starts, ends = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    if mode == "cls":
        out = hidden[starts]
    elif mode == "last":
        out = hidden[ends - 1]
    elif starts.numel() == 1:  # batch of one (online queries): no segment bookkeeping
        out = hidden.float().mean(0, keepdim=True).to(hidden.dtype)
    else:
        B = starts.numel()
        lens = ends - starts
        seg = torch.repeat_interleave(torch.arange(B, device=hidden.device), lens, output_size=hidden.shape[0])
        acc = torch.zeros(B, hidden.shape[1], dtype=torch.float32, device=hidden.device)
        acc.index_add_(0, seg, hidden.float())
        out = (acc / lens[:, None].float()).to(hidden.dtype)
    return truncate_normalize(out, dim, normalize)


# --------------------------------------------------------------------------------------------- Triton
# One program per sequence: it reads only the sequence's rows (mean) or one row (cls/last), reduces in
# fp32, keeps the first `dim` features and divides by their L2 norm before the single [dim] store - the
# pooled [B, H] vector and its truncated copy never reach HBM. The norm is clamped at 1e-12 like F.normalize.
# The [BLOCK_T, BLOCK_H] tile is sized to the rows: BLOCK_T follows the mean length T / B (known on the host,
# no device sync), so an 8-token query reads one full 8-row tile instead of a half-empty 16-row one.
# Programs: one per sequence, so a batch of one is one program, not >= 1 per SM: the L2 norm needs the
# whole pooled vector in one program, and the work (8 x 384 values for a query) is below a microsecond.
POOL_TILE = 8192  # elements of the [BLOCK_T, BLOCK_H] tile streamed per step


@triton.jit
def _pool_fwd_kernel(h_ptr, cu_ptr, out_ptr, H, dim, stride_ht, stride_ob, MODE: tl.constexpr,
                     NORMALIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    seq = tl.program_id(0)
    start = tl.load(cu_ptr + seq).to(tl.int64)
    end = tl.load(cu_ptr + seq + 1).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    keep = cols < dim  # Matryoshka: only the first `dim` features are read, reduced and stored
    if MODE == "mean":
        rows0 = tl.arange(0, BLOCK_T)
        acc = tl.zeros([BLOCK_T, BLOCK_H], dtype=tl.float32)
        for t0 in range(start, end, BLOCK_T):
            rows = t0 + rows0
            acc += tl.load(h_ptr + rows[:, None] * stride_ht + cols[None, :],
                           mask=(rows[:, None] < end) & keep[None, :], other=0.0).to(tl.float32)
        x = tl.sum(acc, axis=0) / (end - start).to(tl.float32)
    else:
        row = start if MODE == "cls" else end - 1
        x = tl.load(h_ptr + row * stride_ht + cols, mask=keep, other=0.0).to(tl.float32)
    if NORMALIZE:
        x = x / tl.maximum(tl.sqrt(tl.sum(x * x, axis=0)), 1e-12)
    tl.store(out_ptr + seq.to(tl.int64) * stride_ob + cols, x.to(out_ptr.dtype.element_ty), mask=keep)


def _grid(B):
    return (B,)


def pool(hidden, cu_seqlens, mode, dim=None, normalize=True):
    """Triton launcher: hidden [T, H], cu_seqlens [B+1] -> [B, dim or H] in hidden.dtype."""
    if mode not in MODES:
        raise ValueError(f"unknown pooling mode {mode!r}; supported: {', '.join(MODES)}")
    if hidden.dim() != 2:
        raise ValueError(f"pool: hidden must be [T, H], got {tuple(hidden.shape)}")
    T, H = hidden.shape
    dim = H if dim is None else int(dim)
    if not 1 <= dim <= H:
        raise ValueError(f"pool: dim must be in [1, {H}], got {dim}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"pool: cu_seqlens must be [B+1] with B >= 1, got {tuple(cu_seqlens.shape)}")
    check_tensors("pool", hidden=hidden, cu_seqlens=cu_seqlens)
    check_dtype("pool", "hidden", hidden)
    hidden = row_major(hidden)
    B = cu_seqlens.numel() - 1
    out = torch.empty((B, dim), dtype=hidden.dtype, device=hidden.device)
    block_h = triton.next_power_of_2(dim)
    block_t = 1 if mode != "mean" else max(1, min(16, POOL_TILE // block_h, triton.next_power_of_2(-(-T // B))))
    launch(_pool_fwd_kernel, _grid(B), hidden, cu_seqlens.to(torch.int32).contiguous(), out, H, dim,
           hidden.stride(0), out.stride(0), MODE=mode, NORMALIZE=bool(normalize), BLOCK_T=block_t, BLOCK_H=block_h,
           num_warps=max(1, min(4, block_t * block_h // 1024)), path=mode, rows=T if mode == "mean" else B,
           tile_rows=block_t)
    return out
