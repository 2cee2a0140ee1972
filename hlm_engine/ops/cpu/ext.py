"""The compiled fp32 CPU inference kernels (csrc/, built by setup.py into `hlm_engine._cpu_kernels`).

EXT is None where the extension is not built (HLM_BUILD_EXT=0) or the CPU lacks AVX2 + FMA (WHY says
which); the `cpu` backend then runs the pieces it can (oneDNN GEMMs) and the references for the rest. The
kernels have no backward: they run only where autograd records nothing (`inference`).
"""
from __future__ import annotations

import torch


def _load():
    try:
        from hlm_engine import _cpu_kernels
    except ImportError as e:
        return None, f"the extension is not built ({e})"
    if not _cpu_kernels.supported():
        return None, "this CPU lacks AVX2 + FMA"
    return _cpu_kernels, ""


EXT, WHY = _load()


def available() -> bool:
    """The extension is built and this CPU has AVX2 + FMA."""
    return EXT is not None


def inference(*tensors: torch.Tensor | None) -> bool:
    """Every given tensor is fp32 on the CPU with nothing for autograd to record."""
    grad = torch.is_grad_enabled()
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and not (grad and t.requires_grad))
               for t in tensors)
