"""Fused residual add + LayerNorm (post-norm encoders such as BERT and MPNet).

    r = x + residual            (r = x when residual is None)
    out = (r - mean(r)) / sqrt(var(r) + eps) * weight + bias
Returns (out, r). Shapes: x, residual [T, H]; weight, bias [H].
"""
from __future__ import annotations

import torch.nn.functional as F


def add_layernorm_ref(x, residual, weight, bias, eps, upcast=False):
    r = x if residual is None else x + residual
    rf = r.float() if upcast else r
    out = F.layer_norm(rf, (r.shape[-1],), weight.to(rf.dtype), None if bias is None else bias.to(rf.dtype), eps)
    return out.to(x.dtype), r
