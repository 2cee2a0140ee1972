"""Per-head RMSNorm of q and k (Qwen3) followed by rotary position embedding, on packed tokens.

q [T, Hq, D], k [T, Hkv, D], q_w/k_w [D] (None skips the norm: Qwen2), positions [T] (position of each
token within its own sequence). RoPE in the half-split (GPT-NeoX / HF Qwen) layout:
    inv_freq_i = theta^(-2i/D), angle = pos * inv_freq, x' = x*cos + rotate_half(x)*sin
The angles are computed in fp32 (positions up to 32k lose precision in half).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_dtype, check_tensors
from .add_rmsnorm import add_rmsnorm_ref


def rope_cos_sin(positions, head_dim, theta, device=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    ang = positions.float()[:, None] * inv_freq[None, :]          # [T, D/2]
    emb = torch.cat([ang, ang], dim=-1)                            # [T, D]
    return emb.cos(), emb.sin()


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def qk_norm_rope_ref(q, k, q_w, k_w, positions, theta, eps):
    D = q.shape[-1]
    if q_w is not None:
        q = add_rmsnorm_ref(q, None, q_w, eps)[0]
        k = add_rmsnorm_ref(k, None, k_w, eps)[0]
    cos, sin = rope_cos_sin(positions, D, theta, device=q.device)
    cos, sin = cos[:, None, :].to(q.dtype), sin[:, None, :].to(q.dtype)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


# --------------------------------------------------------------------------------------------- Triton
# One program per token does every q head and every k head of that token: the angles (pos * inv_freq)
# are computed once and reused by all heads, and each head row is read once and written once. The two
# halves of a head are loaded as separate [heads, D/2] tiles, so rotate_half is a swap, not a gather.
# inv_freq comes from the host with the reference's exact formula (theta ** (2i/D) in fp32), so the angles
# match the reference bit for bit; cos/sin are evaluated in fp32 in the kernel.


@triton.jit
def _norm_rope_heads(x_ptr, out_ptr, w_ptr, tok, stride_xt, stride_xh, stride_ot, stride_oh, n_heads, half, cos,
                     sin, eps, D, HAS_NORM: tl.constexpr, BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    heads = tl.arange(0, BLOCK_HEADS)[:, None]
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    mask = (heads < n_heads) & (cols < half)
    src = x_ptr + tok * stride_xt + heads.to(tl.int64) * stride_xh + cols
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32)
    if HAS_NORM:  # per-head RMSNorm over the full head_dim (both halves)
        ms = (tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / D
        inv = (1.0 / tl.sqrt(ms + eps))[:, None]
        w1 = tl.load(w_ptr + cols, mask=cols < half, other=0.0).to(tl.float32)
        w2 = tl.load(w_ptr + half + cols, mask=cols < half, other=0.0).to(tl.float32)
        x1 = x1 * inv * w1
        x2 = x2 * inv * w2
    dst = out_ptr + tok * stride_ot + heads.to(tl.int64) * stride_oh + cols
    ty = out_ptr.dtype.element_ty
    tl.store(dst, (x1 * cos - x2 * sin).to(ty), mask=mask)          # x*cos + rotate_half(x)*sin, first half
    tl.store(dst + half, (x2 * cos + x1 * sin).to(ty), mask=mask)   # second half


@triton.jit
def _qk_norm_rope_fwd_kernel(q_ptr, k_ptr, q_out_ptr, k_out_ptr, qw_ptr, kw_ptr, pos_ptr, inv_freq_ptr,
                             stride_qt, stride_qh, stride_kt, stride_kh, stride_qot, stride_qoh, stride_kot,
                             stride_koh, n_q_heads, n_kv_heads, half, eps, D, HAS_NORM: tl.constexpr,
                             BLOCK_Q_HEADS: tl.constexpr, BLOCK_KV_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    tok = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    pos = tl.load(pos_ptr + tok).to(tl.float32)
    ang = pos * tl.load(inv_freq_ptr + cols, mask=cols < half, other=0.0)   # [1, BLOCK_HALF] fp32
    cos = tl.cos(ang)
    sin = tl.sin(ang)
    _norm_rope_heads(q_ptr, q_out_ptr, qw_ptr, tok, stride_qt, stride_qh, stride_qot, stride_qoh, n_q_heads, half,
                     cos, sin, eps, D, HAS_NORM, BLOCK_Q_HEADS, BLOCK_HALF)
    _norm_rope_heads(k_ptr, k_out_ptr, kw_ptr, tok, stride_kt, stride_kh, stride_kot, stride_koh, n_kv_heads, half,
                     cos, sin, eps, D, HAS_NORM, BLOCK_KV_HEADS, BLOCK_HALF)


_INV_FREQ: dict = {}


def _inv_freq(D: int, theta: float, device) -> torch.Tensor:
    key = (D, float(theta), str(device))
    if key not in _INV_FREQ:  # the reference's formula, evaluated once per (head_dim, theta, device)
        exps = torch.arange(0, D, 2, dtype=torch.int64, device=device).float() / D
        _INV_FREQ[key] = (1.0 / (theta ** exps)).contiguous()
    return _INV_FREQ[key]


def _grid(T):
    return (T,)


def qk_norm_rope(q, k, q_w, k_w, positions, theta, eps):
    """Triton launcher: q [T, Hq, D], k [T, Hkv, D] (any strides with unit last-dim stride), q_w/k_w [D] or
    None, positions [T] -> new contiguous (q, k)."""
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"qk_norm_rope: q {tuple(q.shape)} and k {tuple(k.shape)} must be [T, H, D] with the "
                         f"same T and D")
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    if D % 2:
        raise ValueError(f"qk_norm_rope: head_dim must be even for RoPE, got {D}")
    if positions.shape != (T,):
        raise ValueError(f"qk_norm_rope: positions has shape {tuple(positions.shape)}, expected ({T},)")
    if (q_w is None) != (k_w is None):
        raise ValueError("qk_norm_rope: pass both q_w and k_w (Qwen3) or neither (Qwen2)")
    if q_w is not None and (q_w.shape != (D,) or k_w.shape != (D,)):
        raise ValueError(f"qk_norm_rope: q_w {tuple(q_w.shape)} / k_w {tuple(k_w.shape)} must be ({D},)")
    check_tensors("qk_norm_rope", q=q, k=k, q_w=q_w, k_w=k_w, positions=positions)
    check_dtype("qk_norm_rope", "q", q)
    if k.dtype != q.dtype:
        raise TypeError(f"qk_norm_rope: q is {q.dtype} but k is {k.dtype}")
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    q_out = torch.empty((T, Hq, D), dtype=q.dtype, device=q.device)
    k_out = torch.empty((T, Hkv, D), dtype=k.dtype, device=k.device)
    if T == 0:
        return q_out, k_out
    half = D // 2
    has_norm = q_w is not None
    _qk_norm_rope_fwd_kernel[_grid(T)](
        q, k, q_out, k_out, q_w if has_norm else q, k_w if has_norm else k, positions.contiguous(),
        _inv_freq(D, theta, q.device), q.stride(0), q.stride(1), k.stride(0), k.stride(1), q_out.stride(0),
        q_out.stride(1), k_out.stride(0), k_out.stride(1), Hq, Hkv, half, eps, D, HAS_NORM=has_norm,
        BLOCK_Q_HEADS=triton.next_power_of_2(Hq), BLOCK_KV_HEADS=triton.next_power_of_2(Hkv),
        BLOCK_HALF=triton.next_power_of_2(half), num_warps=4)
    return q_out, k_out
