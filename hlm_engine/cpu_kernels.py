"""The compiled fp32 CPU inference kernels (csrc/, built by setup.py into `hlm_engine._cpu_kernels`) and the
switch for those that stand in for a PyTorch reference outright: packed attention (`cpu_attention`) and
fused add + LayerNorm (`cpu_norm`). The small-M GEMM has its own kernel choice (HLM_CPU_PREPACK, `cpu_linear`).

EXT is None where the extension is not built (HLM_BUILD_EXT=0) or the CPU lacks AVX2 + FMA; the references
serve then. The kernels have no backward: they run only where autograd does not need one.
HLM_CPU_KERNELS = auto (default) | 0 (off: the PyTorch references everywhere).
"""
from __future__ import annotations

import contextlib
import os

import torch


def _load():
    try:
        from hlm_engine import _cpu_kernels
    except ImportError:
        return None
    return _cpu_kernels if _cpu_kernels.supported() else None


EXT = _load()


def _setting(value: str) -> bool:
    value = value.strip().lower()
    if value in ("0", "off", "none"):
        return False
    if value in ("", "1", "auto"):
        return EXT is not None
    raise ValueError(f"HLM_CPU_KERNELS={value!r}: choose auto or 0")


ENABLED: bool = _setting(os.environ.get("HLM_CPU_KERNELS", "auto"))


def available() -> bool:
    """The extension is built and this CPU has AVX2 + FMA."""
    return EXT is not None


@contextlib.contextmanager
def use(enabled: bool):
    """Temporarily switch the attention and norm kernels on/off (side-by-side benchmarks and tests).
    Not thread-safe against concurrent inference."""
    global ENABLED
    if enabled and EXT is None:
        raise RuntimeError("the CPU kernels are not available here (they need the built extension, "
                           "HLM_BUILD_EXT != 0, and a CPU with AVX2 + FMA)")
    saved, ENABLED = ENABLED, bool(enabled)
    try:
        yield
    finally:
        ENABLED = saved


def inference(*tensors: torch.Tensor | None) -> bool:
    """Kernels on, and every given tensor is fp32 on the CPU with nothing for autograd to record."""
    if not ENABLED:
        return False
    grad = torch.is_grad_enabled()
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and not (grad and t.requires_grad))
               for t in tensors)
