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

    # Same signatures as the ops: the references themselves, nothing wrapped.
    linear = staticmethod(linear_ref)
    varlen_attention = staticmethod(varlen_attention_ref)
    add_layernorm = staticmethod(add_layernorm_ref)
    add_rmsnorm = staticmethod(add_rmsnorm_ref)
    qk_norm_rope = staticmethod(qk_norm_rope_ref)
    swiglu_ffn = staticmethod(swiglu_ffn_ref)
    gelu_ffn = staticmethod(gelu_ffn_ref)
    pool = staticmethod(pool_ref)
