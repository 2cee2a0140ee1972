"""GELU feed-forward (BERT/MPNet intermediate + output dense), optional residual add.

x [T, H], w1 [I, H], b1 [I], w2 [H, I], b2 [H]:
    out = gelu(x @ W1^T + b1) @ W2^T + b2 (+ residual)      gelu = exact erf form, as in BERT
"""
from __future__ import annotations

import torch.nn.functional as F


def gelu_ffn_ref(x, w1, b1, w2, b2, residual=None):
    out = F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)
    return out if residual is None else out + residual
