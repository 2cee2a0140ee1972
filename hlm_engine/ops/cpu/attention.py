"""Packed (varlen) attention for fp32 CPU inference: our AVX2 kernel on the unpadded layout itself.

Why: a served batch is dozens of short queries. The PyTorch reference (`varlen_attention_ref`) pads q, k, v
to [B, H, L, D], masks and runs batched matmuls + softmax; the math is ~1% of the forward's FLOPs but the
padding and op overhead cost ~15-25% of a batched MiniLM forward on one core. The kernel
(csrc/cpu_attention.h) reads q/k/v as the strided views of the fused QKV output, one (sequence, head) at a
time, and writes [T, Hq, D] directly. Same math as the reference: causal, GQA, MPNet's additive bias; exact
softmax with a vector exp (|Δ| ~ 1e-7 relative).

It runs on the calling thread (GIL released). With more torch threads, long sequences go to ATen's
threaded SDPA instead, where the attention itself is a real share of the FLOPs (MAX_SEQLEN_THREADED).
Part of the `cpu` backend (`hlm_engine.ops.cpu`; HLM_CPU_KERNELS=0 builds it without them).
"""
from __future__ import annotations

import torch

from hlm_engine.ops.cpu import ext as cpu_kernels

# Above this max_seqlen with > 1 torch thread the reference's SDPA (threaded) takes over: at L >= 128
# attention is >= 10% of an encoder's FLOPs and one thread would leave the others idle.
MAX_SEQLEN_THREADED = 128


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, max_seqlen: int) -> bool:
    """CPU fp32 inference on layouts the kernel reads (head dim contiguous, a multiple of 8)."""
    if cpu_kernels.EXT is None or not cpu_kernels.inference(q, k, v, bias):
        return False
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3 or any(t.stride(-1) != 1 for t in (q, k, v)):
        return False
    if q.shape[-1] % 8 or bias is not None and (bias.dim() != 3 or bias.stride(-1) != 1):
        return False
    return torch.get_num_threads() == 1 or int(max_seqlen) <= MAX_SEQLEN_THREADED


def varlen_attention(q, k, v, cu_seqlens, causal=False, scale=None, bias=None) -> torch.Tensor:
    """q [T, Hq, D], k/v [T, Hkv, D] (strided views are fine), cu_seqlens [B+1] -> [T, Hq, D] fp32.
    Bad shapes or cu_seqlens raise ValueError naming what is wrong."""
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    if k.shape[0] != T or k.shape[2] != D or v.shape != k.shape:
        raise ValueError(f"varlen_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         f"must be [T, Hq, D], [T, Hkv, D], [T, Hkv, D]")
    if bias is not None and bias.shape[0] != Hq:
        raise ValueError(f"varlen_attention: bias {tuple(bias.shape)} must be [Hq={Hq}, L, L]")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"varlen_attention: cu_seqlens must be 1-D [B+1], got shape {tuple(cu_seqlens.shape)}")
    cu = cu_seqlens.to(device="cpu", dtype=torch.int32).contiguous()
    out = torch.empty(T, Hq, D, dtype=torch.float32)
    scale = D ** -0.5 if scale is None else float(scale)
    b_sh, b_si, b_len = (0, 0, 0) if bias is None else (bias.stride(0), bias.stride(1), min(bias.shape[1:]))
    # Raw addresses: q, k, v, out, cu and bias stay referenced here until the kernel returns.
    cpu_kernels.EXT.attention(q.data_ptr(), q.stride(0), q.stride(1), k.data_ptr(), k.stride(0), k.stride(1),
                              v.data_ptr(), v.stride(0), v.stride(1), out.data_ptr(), out.stride(0),
                              out.stride(1), cu.data_ptr(), cu.numel() - 1, T, Hq, Hkv, D, scale, bool(causal),
                              0 if bias is None else bias.data_ptr(), b_sh, b_si, b_len)
    return out
