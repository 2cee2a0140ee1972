"""The `triton` backend: the Triton kernels of `hlm_engine.kernels` (CUDA; the interpreter on CPU).

Linear layers run `kernels/linear.py`: a split-K GEMV path for <= 16 token rows (batch-1 queries: the
weight stream spread over every SM) and a tiled GEMM with a fused epilogue above. Importing this module imports Triton, which fixes
interpreter mode: set TRITON_INTERPRET=1 before that to run the kernels on CPU.
"""
from __future__ import annotations

from hlm_engine.kernels.add_layernorm import add_layernorm
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm
from hlm_engine.kernels.attention import varlen_attention
from hlm_engine.kernels.gelu_ffn import gelu_ffn
from hlm_engine.kernels.linear import linear
from hlm_engine.kernels.pool import pool
from hlm_engine.kernels.qk_norm_rope import qk_norm_rope
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn


class TritonBackend:
    name = "triton"

    @staticmethod
    def linear(x, w, b=None, activation="none"):
        return linear(x, w, b, None, activation)

    @staticmethod
    def varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal=False, scale=None, bias=None):
        return varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal, scale, bias)

    @staticmethod
    def add_layernorm(x, residual, weight, bias, eps):
        return add_layernorm(x, residual, weight, bias, eps)

    @staticmethod
    def add_rmsnorm(x, residual, weight, eps):
        return add_rmsnorm(x, residual, weight, eps)

    @staticmethod
    def qk_norm_rope(q, k, q_w, k_w, positions, theta, eps):
        return qk_norm_rope(q, k, q_w, k_w, positions, theta, eps)

    @staticmethod
    def swiglu_ffn(x, w_gate_up, w_down, residual=None):
        return swiglu_ffn(x, w_gate_up, w_down, residual)

    @staticmethod
    def gelu_ffn(x, w1, b1, w2, b2, residual=None):
        return gelu_ffn(x, w1, b1, w2, b2, residual)

    @staticmethod
    def pool(hidden, cu_seqlens, mode, dim=None, normalize=True):
        return pool(hidden, cu_seqlens, mode, dim, normalize)
