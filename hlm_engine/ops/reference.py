"""The `torch` backend: the PyTorch reference of every op, as it sits beside its kernel in
`hlm_engine.kernels` (`<op>_ref`). Test oracle, autograd path, runs on any device. Nothing here is ever
swapped for a kernel: `backend="torch"` means exactly this code.
"""
from __future__ import annotations

from hlm_engine.kernels.add_layernorm import add_layernorm_ref
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm_ref
from hlm_engine.kernels.attention import varlen_attention_ref
from hlm_engine.kernels.gelu_ffn import gelu_ffn_ref
from hlm_engine.kernels.linear import linear_ref as _linear_ref
from hlm_engine.kernels.pool import pool_ref
from hlm_engine.kernels.qk_norm_rope import qk_norm_rope_ref
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn_ref


def linear_ref(x, w, b=None, activation="none"):
    """act(x W^T + b): `kernels/linear.py`'s reference without a residual."""
    return _linear_ref(x, w, b, None, activation)


class TorchBackend:
    name = "torch"

    @staticmethod
    def linear(x, w, b=None, activation="none"):
        return linear_ref(x, w, b, activation)

    @staticmethod
    def varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal=False, scale=None, bias=None):
        return varlen_attention_ref(q, k, v, cu_seqlens, max_seqlen, causal, scale, bias)

    @staticmethod
    def add_layernorm(x, residual, weight, bias, eps):
        return add_layernorm_ref(x, residual, weight, bias, eps)

    @staticmethod
    def add_rmsnorm(x, residual, weight, eps):
        return add_rmsnorm_ref(x, residual, weight, eps)

    @staticmethod
    def qk_norm_rope(q, k, q_w, k_w, positions, theta, eps):
        return qk_norm_rope_ref(q, k, q_w, k_w, positions, theta, eps)

    @staticmethod
    def swiglu_ffn(x, w_gate_up, w_down, residual=None):
        return swiglu_ffn_ref(x, w_gate_up, w_down, residual)

    @staticmethod
    def gelu_ffn(x, w1, b1, w2, b2, residual=None):
        return gelu_ffn_ref(x, w1, b1, w2, b2, residual)

    @staticmethod
    def pool(hidden, cu_seqlens, mode, dim=None, normalize=True):
        return pool_ref(hidden, cu_seqlens, mode, dim, normalize)
