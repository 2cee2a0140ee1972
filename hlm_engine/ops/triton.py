"""The `triton` backend: the Triton kernels of `hlm_engine.kernels` (CUDA; the interpreter on CPU).

Linear layers run `kernels/linear.py`: a split-K GEMV path for <= 16 token rows (batch-1 queries: the
weight stream spread over every SM) and a tiled GEMM with a fused epilogue above. Importing this module imports Triton, which fixes
interpreter mode: set TRITON_INTERPRET=1 before that to run the kernels on CPU.
"""
from __future__ import annotations

from hlm_engine.kernels.add_layernorm import add_layernorm as _add_layernorm
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm as _add_rmsnorm
from hlm_engine.kernels.attention import varlen_attention as _varlen_attention
from hlm_engine.kernels.gelu_ffn import gelu_ffn as _gelu_ffn
from hlm_engine.kernels.linear import linear as _linear
from hlm_engine.kernels.pool import pool as _pool
from hlm_engine.kernels.qk_norm_rope import qk_norm_rope as _qk_norm_rope
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn as _swiglu_ffn


class TritonBackend:
    name = "triton"

    @staticmethod
    def linear(x, w, b=None, activation="none"):
        return _linear(x, w, b, None, activation)

    # The launchers take the ops' arguments in the same order.
    varlen_attention = staticmethod(_varlen_attention)
    add_layernorm = staticmethod(_add_layernorm)
    add_rmsnorm = staticmethod(_add_rmsnorm)
    qk_norm_rope = staticmethod(_qk_norm_rope)
    swiglu_ffn = staticmethod(_swiglu_ffn)
    gelu_ffn = staticmethod(_gelu_ffn)
    pool = staticmethod(_pool)
