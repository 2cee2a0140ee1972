"""GELU feed-forward (BERT/MPNet intermediate + output dense), optional residual add.

x [T, H], w1 [I, H], b1 [I], w2 [H, I], b2 [H]:
    out = gelu(x @ W1^T + b1) @ W2^T + b2 (+ residual)      gelu = exact erf form, as in BERT
"""
from __future__ import annotations

import torch.nn.functional as F

from .linear import linear


def gelu_ffn_ref(x, w1, b1, w2, b2, residual=None):
    out = F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)
    return out if residual is None else out + residual


# --------------------------------------------------------------------------------------------- Triton
# Two GEMM kernels from `linear.py`, each with its epilogue fused:
#   1. up:   gelu(x W1^T + b1) - bias and the exact erf GELU applied to the fp32 accumulator tile, so the
#            pre-activation [T, I] never reaches HBM;
#   2. down: h W2^T + b2 + residual - bias and residual add in the epilogue.


def gelu_ffn(x, w1, b1, w2, b2, residual=None):
    """Triton launcher: x [..., H], w1 [I, H], b1 [I], w2 [H, I], b2 [H], residual [..., H] | None."""
    H = x.shape[-1]
    if w1.dim() != 2 or w1.shape[1] != H or w2.shape != (H, w1.shape[0]):
        raise ValueError(f"gelu_ffn: w1 {tuple(w1.shape)} must be [I, {H}] and w2 {tuple(w2.shape)} [{H}, I]")
    h = linear(x, w1, b1, None, activation="gelu")
    return linear(h, w2, b2, residual)
