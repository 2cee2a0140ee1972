"""The one backend seam. Models call ops through the backend object they were built with; nothing else
chooses an implementation, and nothing decides again per call.

Backends (`get(name)` -> an object with the op methods below, `.name`):
  torch  - the PyTorch references beside each kernel (`hlm_engine.kernels.*_ref`): the test oracle, autograd,
           any device. `backend="torch"` is always exactly this.
  cpu    - fp32 CPU inference on our C++ kernels (`hlm_engine._cpu_kernels`): packed small-M GEMMs, packed
           varlen attention, fused add + LayerNorm (`hlm_engine.ops.cpu`). Where autograd records (training)
           or a dtype/layout the kernels do not read, a call runs the reference: the kernels have no backward.
  triton - the Triton kernels (CUDA; on CPU only under the interpreter, TRITON_INTERPRET=1 before import).
  auto   - triton on CUDA when Triton imports, cpu on the CPU when the extension is built for this CPU,
           torch otherwise (an automatic fallback is logged once).

`resolve_backend(requested, device)` picks once per model (`HLM_BACKEND` is the default when nothing is
asked for); an explicit request that cannot be honoured raises. The module-level functions (`linear`,
`varlen_attention`, ...) take `backend=` (a name or a backend object) for code outside the models.
"""
from __future__ import annotations

import importlib.util
import logging
import os

import torch

from hlm_engine.ops.reference import TorchBackend

log = logging.getLogger(__name__)
BACKENDS = ("torch", "cpu", "triton", "auto")
OPS = ("linear", "varlen_attention", "add_layernorm", "add_rmsnorm", "qk_norm_rope", "swiglu_ffn", "gelu_ffn",
       "pool")


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


def cpu_status(device: torch.device | str | None) -> tuple[bool, str]:
    """(usable, reason) for the C++ CPU backend on `device`."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cpu":
        return False, f"backend='cpu' runs on the CPU only (device is {dev})"
    from hlm_engine.ops.cpu import ext
    if ext.EXT is None:
        return False, ("backend='cpu' needs the C++ extension hlm_engine._cpu_kernels built (HLM_BUILD_EXT != 0) "
                       "and a CPU with AVX2 + FMA: " + ext.WHY)
    return True, "C++ CPU kernels"


_warned: set[str] = set()


def _fallback(msg: str) -> None:
    if msg not in _warned:  # logged once per reason, not per model
        _warned.add(msg)
        log.warning(msg)


def resolve_backend(requested: str | None = None, device: torch.device | str | None = None) -> str:
    """Pick 'torch', 'cpu' or 'triton' once, for a model living on `device`."""
    req = requested or os.environ.get("HLM_BACKEND", "auto")
    if req not in BACKENDS:
        raise ValueError(f"unknown backend {req!r}; choose one of {', '.join(BACKENDS)}")
    if req == "torch":
        return "torch"
    if req in ("triton", "cpu"):
        ok, why = (triton_status if req == "triton" else cpu_status)(device)
        if not ok:
            raise RuntimeError(why)
        return req
    is_cuda = device is not None and torch.device(device).type == "cuda"
    if is_cuda:
        ok, why = triton_status(device)
        if ok:
            return "triton"
        _fallback(f"backend auto: falling back to torch on CUDA: {why}")
        return "torch"
    ok, why = cpu_status(device)
    if ok:
        return "cpu"
    _fallback(f"backend auto: the PyTorch reference on the CPU: {why}")
    return "torch"


_BUILT: dict[str, object] = {}


def get(backend="torch"):
    """The backend object for a name ("torch" | "cpu" | "triton"), built once; a backend object passes
    through (e.g. `hlm_engine.ops.cpu.CpuBackend(gemm="onednn")` for side-by-side benchmarks)."""
    if not isinstance(backend, str):
        return backend
    if backend not in _BUILT:
        if backend == "torch":
            _BUILT[backend] = TorchBackend()
        elif backend == "cpu":
            from hlm_engine.ops.cpu import CpuBackend
            _BUILT[backend] = CpuBackend.from_env()
        elif backend == "triton":
            from hlm_engine.ops.triton import TritonBackend
            _BUILT[backend] = TritonBackend()
        else:
            raise ValueError(f"unknown backend {backend!r}; choose one of torch, cpu, triton")
    return _BUILT[backend]


def linear(x, w, b=None, activation="none", backend="torch"):
    """act(x W^T + b), activation "none" | "gelu"."""
    return get(backend).linear(x, w, b, activation)


def varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal=False, scale=None, bias=None, backend="torch"):
    """q [T, Hq, D], k/v [T, Hkv, D], cu_seqlens [B+1] int32 -> [T, Hq, D]."""
    return get(backend).varlen_attention(q, k, v, cu_seqlens, max_seqlen, causal, scale, bias)


def add_rmsnorm(x, residual, weight, eps, backend="torch"):
    """-> (rmsnorm(x + residual) * weight, x + residual)."""
    return get(backend).add_rmsnorm(x, residual, weight, eps)


def add_layernorm(x, residual, weight, bias, eps, backend="torch"):
    """-> (layernorm(x + residual), x + residual)."""
    return get(backend).add_layernorm(x, residual, weight, bias, eps)


def qk_norm_rope(q, k, q_w, k_w, positions, theta, eps, backend="torch"):
    """Per-head RMSNorm (skipped when q_w is None) + RoPE at `positions` -> (q, k)."""
    return get(backend).qk_norm_rope(q, k, q_w, k_w, positions, theta, eps)


def swiglu_ffn(x, w_gate_up, w_down, residual=None, backend="torch"):
    """(silu(x Wg^T) * x Wu^T) Wd^T + residual."""
    return get(backend).swiglu_ffn(x, w_gate_up, w_down, residual)


def gelu_ffn(x, w1, b1, w2, b2, residual=None, backend="torch"):
    """gelu(x W1^T + b1) W2^T + b2 + residual."""
    return get(backend).gelu_ffn(x, w1, b1, w2, b2, residual)


def pool(hidden, cu_seqlens, mode, dim=None, normalize=True, backend="torch"):
    """mean | cls | last pooling over cu_seqlens, Matryoshka truncation to `dim`, optional L2 norm."""
    return get(backend).pool(hidden, cu_seqlens, mode, dim, normalize)
