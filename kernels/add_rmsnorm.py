"""Fused residual add + RMSNorm (pre-norm decoders such as Qwen3).

    r = x + residual            (r = x when residual is None)
    out = r / sqrt(mean(r^2) + eps) * weight
Returns (out, r): the normalised activations and the new residual stream. Shapes: x, residual [T, H].
"""
from __future__ import annotations

import torch


def add_rmsnorm_ref(x, residual, weight, eps, upcast=True):
    r = x if residual is None else x + residual
    rf = r.float() if upcast else r
    out = rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.to(out.dtype)).to(x.dtype), r


def rmsnorm_ref(x, weight, eps):
    return add_rmsnorm_ref(x, None, weight, eps)[0]
