"""Launch helpers shared by the kernel launchers: device checks with errors that say what to do, the SM count
the launch heuristics fill, and the one place a kernel is launched (`launch`), which the GPU compile gate
(bench/gpu_static.py) turns into a JIT warm-up.

Triton decides at decoration time (module import) whether `@triton.jit` kernels compile for the GPU or run
in the CPU interpreter, so TRITON_INTERPRET=1 must be set before `hlm_engine` is first imported.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import triton

# Read once, like triton.jit does: this is the mode the kernels in this package were built in.
INTERPRETING = bool(triton.knobs.runtime.interpret)


@dataclass
class Launch:
    """One kernel launch seen in compile-only mode: what the gate reports per configuration."""
    kernel: str
    path: str                 # which code path of the launcher (e.g. "gemv-splitk", "tiled")
    grid: tuple
    compiled: object          # triton CompiledKernel (asm, metadata)
    rows: int                 # real rows of work over the whole launch (tokens, token-heads, ...)
    tile_rows: int            # rows of the tile one program holds (>= 16 for tl.dot tiles)
    meta: dict = field(default_factory=dict)


@dataclass
class _CompileOnly:
    sms: int
    launches: list = field(default_factory=list)


_COMPILE_ONLY: _CompileOnly | None = None


@contextlib.contextmanager
def compile_only(sms: int):
    """Compile-only mode for the GPU compile gate: CPU tensors are accepted, `num_sms` answers `sms` (108 for
    an A100, 132 for an H100), and `launch` compiles each kernel with `kernel.warmup` (no GPU needed once
    Triton's active driver targets a GPU) and records a `Launch` instead of running it. Outputs stay unset."""
    global _COMPILE_ONLY
    if INTERPRETING:
        raise RuntimeError("compile_only needs compiled kernels: unset TRITON_INTERPRET before importing them")
    prev, _COMPILE_ONLY = _COMPILE_ONLY, _CompileOnly(sms)
    try:
        yield _COMPILE_ONLY.launches
    finally:
        _COMPILE_ONLY = prev


def launch(kernel, grid: tuple, *args, path: str = "", rows: int = 0, tile_rows: int = 0, **kwargs):
    """kernel[grid](*args, **kwargs); in compile-only mode a warm-up that records the compiled kernel.
    `path`, `rows` and `tile_rows` only feed the gate's report (rows of real work vs programs x tile rows)."""
    if _COMPILE_ONLY is None:
        return kernel[grid](*args, **kwargs)
    # kernel.warmup has the same signature in Triton 3.6 and 3.7 (grid as a keyword).
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    meta = {k: v for k, v in kwargs.items() if isinstance(v, (int, str, bool))}
    _COMPILE_ONLY.launches.append(Launch(kernel.fn.__name__, path, tuple(grid), compiled, rows, tile_rows, meta))
    return None


def check_tensors(op: str, **tensors) -> torch.device:
    """All named tensors on one device the kernels can run on; returns that device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev != first:
            raise ValueError(f"{op}: {name} is on {dev} but the other inputs are on {first}")
    if first.type != "cuda" and not INTERPRETING and _COMPILE_ONLY is None:
        raise RuntimeError(f"{op}: Triton kernels need CUDA tensors (got {first}); on CPU set TRITON_INTERPRET=1 "
                           f"before hlm_engine is imported to run them in the Triton interpreter")
    return first


def check_dtype(op: str, name: str, t: torch.Tensor, allowed=(torch.float32, torch.float16, torch.bfloat16)):
    if t.dtype not in allowed:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported: {', '.join(str(d) for d in allowed)}")


def row_major(t: torch.Tensor) -> torch.Tensor:
    """2-D view with unit stride along the last dim (the kernels index rows by stride, columns by 1)."""
    return t if t.stride(-1) == 1 else t.contiguous()


_SMS: dict = {}


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors to fill (launch heuristics). The interpreter runs programs one after
    another, so there it counts as a single SM: fewer, larger tiles. Compile-only mode answers its target's."""
    if _COMPILE_ONLY is not None:
        return _COMPILE_ONLY.sms
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx not in _SMS:  # the property query costs microseconds: once per device, not per launch
            _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
        return _SMS[idx]
    return 1


def pow2_floor(n: int) -> int:
    """Largest power of two <= n (n >= 1)."""
    return 1 << (max(1, int(n)).bit_length() - 1)
