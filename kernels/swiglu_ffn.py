"""SwiGLU feed-forward with the residual add (Qwen3/Qwen2 MLP).

x [T, H], w_gate_up [2I, H] (rows 0..I-1 = gate, I..2I-1 = up), w_down [H, I], residual [T, H] or None:
    out = (silu(x @ Wg^T) * (x @ Wu^T)) @ Wd^T (+ residual)
"""
from __future__ import annotations

import torch.nn.functional as F


def swiglu_ffn_ref(x, w_gate_up, w_down, residual=None):
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    out = F.linear(F.silu(gate) * up, w_down)
    return out if residual is None else out + residual
