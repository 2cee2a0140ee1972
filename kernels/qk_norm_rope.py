"""Per-head RMSNorm of q and k (Qwen3) followed by rotary position embedding, on packed tokens.

q [T, Hq, D], k [T, Hkv, D], q_w/k_w [D] (None skips the norm: Qwen2), positions [T] (position of each
token within its own sequence). RoPE in the half-split (GPT-NeoX / HF Qwen) layout:
    inv_freq_i = theta^(-2i/D), angle = pos * inv_freq, x' = x*cos + rotate_half(x)*sin
The angles are computed in fp32 (positions up to 32k lose precision in half).
"""
from __future__ import annotations

import torch

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
