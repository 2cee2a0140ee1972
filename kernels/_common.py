"""Launch helpers shared by the kernel launchers: device checks with errors that say what to do.

Triton decides at decoration time (module import) whether `@triton.jit` kernels compile for the GPU or run
in the CPU interpreter, so TRITON_INTERPRET=1 must be set before `hlm_engine` is first imported.
"""
from __future__ import annotations

import torch
import triton

# Read once, like triton.jit does: this is the mode the kernels in this package were built in.
INTERPRETING = bool(triton.knobs.runtime.interpret)


def check_tensors(op: str, **tensors) -> torch.device:
    """All named tensors on one device the kernels can run on; returns that device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev != first:
            raise ValueError(f"{op}: {name} is on {dev} but the other inputs are on {first}")
    if first.type != "cuda" and not INTERPRETING:
        raise RuntimeError(f"{op}: Triton kernels need CUDA tensors (got {first}); on CPU set TRITON_INTERPRET=1 "
                           f"before hlm_engine is imported to run them in the Triton interpreter")
    return first


def check_dtype(op: str, name: str, t: torch.Tensor, allowed=(torch.float32, torch.float16, torch.bfloat16)):
    if t.dtype not in allowed:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported: {', '.join(str(d) for d in allowed)}")


def row_major(t: torch.Tensor) -> torch.Tensor:
    """2-D view with unit stride along the last dim (the kernels index rows by stride, columns by 1)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors to fill (launch heuristics). The interpreter runs programs one after
    another, so there it counts as a single SM: fewer, larger tiles."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1
