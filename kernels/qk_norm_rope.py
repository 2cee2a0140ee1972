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

from ._common import check_dtype, check_tensors, launch, num_sms, pow2_floor
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
# The q heads and the k heads of all tokens form one list of T * (Hq + Hkv) head rows; a program takes
# BLOCK_R of them, sized to the rows so the programs cover every SM (an 8-token Qwen3 query is 192 head rows:
# one per program; a batch packs up to 32 per program). Each row is loaded as its two halves ([BLOCK_R,
# D/2] tiles), so rotate_half is a swap, not a gather; a row comes from q or from k by two masked loads.
# inv_freq comes from the host with the reference's exact formula (theta ** (2i/D) in fp32), so the angles
# match the reference bit for bit; cos/sin are evaluated in fp32 in the kernel.
# Elements of a [BLOCK_R, BLOCK_HALF] half tile (two live in fp32, four 64-bit pointer tiles): at 8 per thread.
# 16 per thread (4 warps) spilled on sm_80 (compile gate: 168 registers, the q/k/out pointers of both halves).
ROW_TILE = 2048


@triton.jit
def _qk_norm_rope_fwd_kernel(q_ptr, k_ptr, q_out_ptr, k_out_ptr, qw_ptr, kw_ptr, pos_ptr, inv_freq_ptr,
                             stride_qt, stride_qh, stride_kt, stride_kh, stride_qot, stride_qoh, stride_kot,
                             stride_koh, n_rows, n_q_heads, n_heads, half, eps, D, HAS_NORM: tl.constexpr,
                             BLOCK_R: tl.constexpr, BLOCK_HALF: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    tok = (r // n_heads).to(tl.int64)[:, None]
    head = r % n_heads
    is_q = (head < n_q_heads)[:, None]
    qh = head[:, None].to(tl.int64)
    kh = qh - n_q_heads
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    ok = (r < n_rows)[:, None] & (cols < half)
    mq, mk = ok & is_q, ok & ~is_q
    q_src = q_ptr + tok * stride_qt + qh * stride_qh + cols
    k_src = k_ptr + tok * stride_kt + kh * stride_kh + cols
    x1 = (tl.load(q_src, mask=mq, other=0.0) + tl.load(k_src, mask=mk, other=0.0)).to(tl.float32)
    x2 = (tl.load(q_src + half, mask=mq, other=0.0) + tl.load(k_src + half, mask=mk, other=0.0)).to(tl.float32)
    if HAS_NORM:  # per-head RMSNorm over the full head_dim (both halves), q_w for q rows, k_w for k rows
        inv = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1))[:, None] / D + eps)
        wm = cols < half
        w1 = tl.where(is_q, tl.load(qw_ptr + cols, mask=wm, other=0.0).to(tl.float32),
                      tl.load(kw_ptr + cols, mask=wm, other=0.0).to(tl.float32))
        w2 = tl.where(is_q, tl.load(qw_ptr + half + cols, mask=wm, other=0.0).to(tl.float32),
                      tl.load(kw_ptr + half + cols, mask=wm, other=0.0).to(tl.float32))
        x1 = x1 * inv * w1
        x2 = x2 * inv * w2
    pos = tl.load(pos_ptr + tok, mask=r[:, None] < n_rows, other=0).to(tl.float32)
    ang = pos * tl.load(inv_freq_ptr + cols, mask=cols < half, other=0.0)   # [BLOCK_R, BLOCK_HALF] fp32
    cos = tl.cos(ang)
    sin = tl.sin(ang)
    y1 = x1 * cos - x2 * sin                      # x*cos + rotate_half(x)*sin, first half
    y2 = x2 * cos + x1 * sin                      # second half
    q_dst = q_out_ptr + tok * stride_qot + qh * stride_qoh + cols
    k_dst = k_out_ptr + tok * stride_kot + kh * stride_koh + cols
    tl.store(q_dst, y1.to(q_out_ptr.dtype.element_ty), mask=mq)
    tl.store(q_dst + half, y2.to(q_out_ptr.dtype.element_ty), mask=mq)
    tl.store(k_dst, y1.to(k_out_ptr.dtype.element_ty), mask=mk)
    tl.store(k_dst + half, y2.to(k_out_ptr.dtype.element_ty), mask=mk)


_INV_FREQ: dict = {}


def _inv_freq(D: int, theta: float, device) -> torch.Tensor:
    key = (D, float(theta), str(device))
    if key not in _INV_FREQ:  # the reference's formula, evaluated once per (head_dim, theta, device)
        exps = torch.arange(0, D, 2, dtype=torch.int64, device=device).float() / D
        _INV_FREQ[key] = (1.0 / (theta ** exps)).contiguous()
    return _INV_FREQ[key]


def _block_rows(n_rows: int, block_half: int, sms: int) -> int:
    """Head rows per program: one while the rows do not cover every SM, then up to ROW_TILE elements."""
    return max(1, min(ROW_TILE // block_half, pow2_floor(n_rows // max(1, sms))))


def _grid(n_rows, block_r):
    return (triton.cdiv(n_rows, block_r),)


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
    n_rows = T * (Hq + Hkv)
    block_half = triton.next_power_of_2(half)
    block_r = _block_rows(n_rows, block_half, num_sms(q.device))
    launch(_qk_norm_rope_fwd_kernel, _grid(n_rows, block_r),
           q, k, q_out, k_out, q_w if has_norm else q, k_w if has_norm else k, positions.contiguous(),
           _inv_freq(D, theta, q.device), q.stride(0), q.stride(1), k.stride(0), k.stride(1), q_out.stride(0),
           q_out.stride(1), k_out.stride(0), k_out.stride(1), n_rows, Hq, Hq + Hkv, half, eps, D,
           HAS_NORM=has_norm, BLOCK_R=block_r, BLOCK_HALF=block_half,
           num_warps=max(1, min(8, block_r * block_half // 256)), path="norm" if has_norm else "rope",
           rows=n_rows, tile_rows=block_r)
    return q_out, k_out
