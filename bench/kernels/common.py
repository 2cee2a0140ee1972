"""Shared pieces of the kernel benchmarks: the CUDA check, timing, peaks and the result file.

Every benchmark times the Triton kernel and its PyTorch eager reference (and peers such as SDPA or
flash-attn when installed) in the same run with `triton.testing.do_bench` (median of repeated launches,
L2 flushed between them), and reports TFLOP/s or GB/s, the fraction of the GPU's peak, and the speedup.
"""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/ for roofline
from roofline import GPUS  # noqa: E402

from hlm_engine.io import write_json  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def require_cuda(name: str) -> None:
    """Exit cleanly (status 0) with a clear message when there is no GPU to measure on."""
    if not torch.cuda.is_available():
        print(f"[skip] {name}: no CUDA device - kernel benchmarks time real GPU kernels with "
              f"triton.testing.do_bench. Run on a machine with an NVIDIA GPU (the CPU interpreter only checks "
              f"correctness: pytest tests/kernels).")
        raise SystemExit(0)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit(f"{name}: unset TRITON_INTERPRET to benchmark compiled kernels")


def gpu_key() -> str:
    """The roofline GPU entry for the current device: H100 for Hopper parts, A100 otherwise (fractions of
    peak are then approximate)."""
    name = torch.cuda.get_device_name()
    return "H100" if any(s in name for s in ("H100", "H200", "GH200")) else "A100"


def peak() -> tuple[str, float, float]:
    """(device name, bf16 dense TFLOP/s, HBM GB/s) used for the fraction-of-peak columns."""
    gpu = GPUS[gpu_key()]
    return torch.cuda.get_device_name(), gpu.bf16_tflops, gpu.hbm_gbs


def bench_ms(fn) -> float:
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def save(name: str, rows: list[dict]) -> None:
    dev, tflops, gbs = peak()
    path = os.path.join(RESULTS, f"kernels_{name}.json")
    write_json(path, dict(device=dev, peak_tflops=tflops, peak_gbs=gbs, rows=rows))
    print(f"wrote {path}")


def fmt_row(cells: dict) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in cells.items())
