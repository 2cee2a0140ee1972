"""The one backend seam. Models call these functions; nothing else chooses an implementation.

Backends:
  torch  - the PyTorch references in `hlm_engine.kernels` (CPU fallback, test oracle, autograd-friendly)
  triton - the Triton kernels (CUDA; on CPU only under the interpreter, TRITON_INTERPRET=1)
  auto   - triton for CUDA tensors when Triton imports, torch otherwise (a CUDA fallback is logged)

The choice is made once per model (`resolve_backend`) and passed as `backend=` to every call; the
`HLM_BACKEND=torch|triton|auto` environment variable is the default when no explicit value is given.
An explicit request that cannot be honoured raises instead of silently falling back.
"""
from __future__ import annotations

import importlib.util
import logging
import os

import torch
import torch.nn.functional as F

from hlm_engine import cpu_attention, cpu_linear, cpu_norm
from hlm_engine.kernels.add_layernorm import add_layernorm_ref
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm_ref
from hlm_engine.kernels.attention import varlen_attention_ref
from hlm_engine.kernels.gelu_ffn import gelu_ffn_ref
from hlm_engine.kernels.pool import pool_ref
from hlm_engine.kernels.qk_norm_rope import qk_norm_rope_ref
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn_ref

log = logging.getLogger(__name__)
BACKENDS = ("torch", "triton", "auto")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_status(device: torch.device | str | None) -> tuple[bool, str]:
    """(usable, reason) for running Triton kernels on `device`."""
    if importlib.util.find_spec("triton") is None:
        return False, "Triton is not installed (pip install triton)"
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return True, "CUDA device"
    if _interpreting():
        return True, "Triton interpreter (TRITON_INTERPRET=1) on CPU"
    return False, (f"backend='triton' needs a CUDA device, or TRITON_INTERPRET=1 set before triton is "
                   f"imported to run the kernels in the interpreter on CPU (device is {dev})")


def resolve_backend(requested: str | None = None, device: torch.device | str | None = None) -> str:
    """Pick 'torch' or 'triton' once, for a model living on `device`."""
    req = requested or os.environ.get("HLM_BACKEND", "auto")
    if req not in BACKENDS:
        raise ValueError(f"unknown backend {req!r}; choose one of {', '.join(BACKENDS)}")
    if req == "torch":
        return "torch"
    ok, why = triton_status(device)
    if req == "triton":
        if not ok:
            raise RuntimeError(why)
        return "triton"
    is_cuda = torch.device(device).type == "cuda" if device is not None else False
    if is_cuda and ok:
        return "triton"
    if is_cuda:
        log.warning("backend auto: falling back to torch on CUDA: %s", why)
    return "torch"


def _k(name: str):
    # Imported lazily: importing triton decides interpreter mode, and CPU-only users never need it.
    import importlib
    return importlib.import_module(f"hlm_engine.kernels.{name}")


def linear(x, w, b=None, activation="none", backend="torch"):
    """act(x W^T + b), activation "none" | "gelu". The plain projections (QKV, attention output) stay on the
    vendor GEMM on GPU (cuBLAS already runs them at roofline); on CPU inference small batches run on weights
    packed once (`cpu_linear`: our AVX2 small-M kernel, else oneDNN; the batch-1 win). Fused epilogues
    live in the FFN ops."""
    return cpu_linear.linear(x, w, b, activation)


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal=False, scale=None, bias=None, backend="torch"):
    """q [T, Hq, D], k/v [T, Hkv, D], cu_seqlens [B+1] int32 -> [T, Hq, D]. CPU fp32 inference runs our
    kernel on the packed rows (`cpu_attention`: no padding); training and other dtypes the reference."""
    if backend == "triton":
        return _k("attention").varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal, scale, bias)
    if cpu_attention.usable(q, k, v, bias, max_seqlen):
        return cpu_attention.varlen_attention(q, k, v, cu_seqlens, causal, scale, bias)
    return varlen_attention_ref(q, k, v, cu_seqlens, max_seqlen, causal, scale, bias)


def add_rmsnorm(x, residual, weight, eps, backend="torch"):
    """-> (rmsnorm(x + residual) * weight, x + residual)."""
    if backend == "triton":
        return _k("add_rmsnorm").add_rmsnorm(x, residual, weight, eps)
    return add_rmsnorm_ref(x, residual, weight, eps)


def add_layernorm(x, residual, weight, bias, eps, backend="torch"):
    """-> (layernorm(x + residual), x + residual). CPU fp32 inference: one fused pass (`cpu_norm`)."""
    if backend == "triton":
        return _k("add_layernorm").add_layernorm(x, residual, weight, bias, eps)
    if cpu_norm.usable(x, residual, weight, bias):
        return cpu_norm.add_layernorm(x, residual, weight, bias, eps)
    return add_layernorm_ref(x, residual, weight, bias, eps)


def qk_norm_rope(q, k, q_w, k_w, positions, theta, eps, backend="torch"):
    """Per-head RMSNorm (skipped when q_w is None) + RoPE at `positions` -> (q, k)."""
    if backend == "triton":
        return _k("qk_norm_rope").qk_norm_rope(q, k, q_w, k_w, positions, theta, eps)
    return qk_norm_rope_ref(q, k, q_w, k_w, positions, theta, eps)


def swiglu_ffn(x, w_gate_up, w_down, residual=None, backend="torch"):
    """(silu(x Wg^T) * x Wu^T) Wd^T + residual."""
    if backend == "triton":
        return _k("swiglu_ffn").swiglu_ffn(x, w_gate_up, w_down, residual)
    if cpu_linear.inference(x, w_gate_up):  # CPU inference: the same math on packed weights / MKL
        gate, up = cpu_linear.linear(x, w_gate_up).chunk(2, dim=-1)
        out = cpu_linear.linear(F.silu(gate) * up, w_down)
        return out if residual is None else out + residual
    return swiglu_ffn_ref(x, w_gate_up, w_down, residual)


def gelu_ffn(x, w1, b1, w2, b2, residual=None, backend="torch"):
    """gelu(x W1^T + b1) W2^T + b2 + residual."""
    if backend == "triton":
        return _k("gelu_ffn").gelu_ffn(x, w1, b1, w2, b2, residual)
    if cpu_linear.inference(x, w1):  # CPU inference: packed weights or MKL + our vectorized GELU
        out = cpu_linear.linear(cpu_linear.linear(x, w1, b1, "gelu"), w2, b2)
        return out if residual is None else out + residual
    return gelu_ffn_ref(x, w1, b1, w2, b2, residual)


def pool(hidden, cu_seqlens, mode, dim=None, normalize=True, backend="torch"):
    """mean | cls | last pooling over cu_seqlens, Matryoshka truncation to `dim`, optional L2 norm."""
    if backend == "triton":
        return _k("pool").pool(hidden, cu_seqlens, mode, dim, normalize)
    return pool_ref(hidden, cu_seqlens, mode, dim, normalize)
