"""The CPU GEMMs of query encoding, side by side, against the machine's two limits.

MiniLM's 24 linears per forward (6 layers x QKV 1152x384, out 384x384, up 1536x384 + GELU, down 384x1536;
42.5 MB of fp32 weights) at M token rows, for every GEMM path `hlm_engine.ops.cpu.linear` has: our small-M
kernel (csrc/small_gemm.h), oneDNN on prepacked weights, and plain F.linear (MKL sgemm), interleaved in
rounds (median of 7). Against:
  - the memory limit: this core's DRAM read stream (GB/s of a 170 MB torch.sum; the weights do not fit the
    LLC, so at M ~ 8 every forward must stream them), reported as weight GB/s / stream GB/s;
  - the compute limit: fp32 matmul GFLOP/s at 1024^3 (torch.matmul, best of 10).
At batch 1 (M ~ 6) a GEMM is memory-bound: the figure to read is the weight GB/s as a share of the stream.

    .venv/bin/python -m pytest bench/test_cpu_gemm.py --benchmark-only -s
Writes bench/results/cpu_gemm.json. No data needed (random weights at MiniLM's shapes).
"""
import time

import numpy as np
import pytest
import torch

from hlm_engine.ops.cpu import linear as cpu_linear
from hlm_engine.report.tables import cpu_gemm_table

SHAPES = [(1152, 384), (384, 384), (1536, 384), (384, 1536)] * 6  # (N, K) per linear, MiniLM-L6
ROWS = (1, 6, 8, 12, 32, 64, 128, 256, 512)
THREADS = (1, 2)
ROUNDS, REPS = 7, 5
_rows: dict[str, dict] = {}


def stream_gbps(reps: int = 5) -> float:
    a = torch.ones(170_000_000 // 4)
    a.sum()
    best = min(_timed(a.sum) for _ in range(reps))
    return a.numel() * 4 / best / 1e9


def matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    return 2 * n ** 3 / min(_timed(lambda: torch.matmul(a, b)) for _ in range(reps)) / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _forward_gemms(xs, weights, kernel):
    """The 24 linears of one forward; x per K (the FFN-down input is wider)."""
    for (n, k), (w, b) in zip(SHAPES, weights):
        cpu_linear.linear(xs[k], w, b, "gelu" if n == 1536 else "none", kernel=kernel)


@pytest.mark.parametrize("threads", THREADS)
def test_cpu_gemm_paths(benchmark, threads, machine_info, write_result, capsys):
    kernels = cpu_linear.available()
    if not kernels:
        pytest.skip("no packed CPU GEMM kernel in this build/torch")
    g = torch.Generator().manual_seed(0)
    weights = [(torch.randn(n, k, generator=g) / k ** 0.5, torch.randn(n, generator=g)) for n, k in SHAPES]
    weight_bytes = sum(w.numel() * 4 for w, _ in weights)
    flops_per_row = sum(2 * n * k for n, k in SHAPES)
    paths = kernels + [None]  # None: plain F.linear (MKL)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stream, probe = stream_gbps(), matmul_gflops()
        table = {}
        with torch.inference_mode():
            for m in ROWS:
                xs = {384: torch.randn(m, 384, generator=g), 1536: torch.randn(m, 1536, generator=g)}
                times = {p or "mkl": [] for p in paths}
                for p in paths:  # warm: packs each path's weights once
                    _forward_gemms(xs, weights, p)
                for r in range(ROUNDS):
                    for p in paths[r % len(paths):] + paths[: r % len(paths)]:
                        t0 = time.perf_counter()
                        for _ in range(REPS):
                            _forward_gemms(xs, weights, p)
                        times[p or "mkl"].append((time.perf_counter() - t0) / REPS)
                table[m] = {name: {"ms": float(np.median(t)) * 1e3,
                                   "weight_gbps": weight_bytes / float(np.median(t)) / 1e9,
                                   "gflops": flops_per_row * m / float(np.median(t)) / 1e9}
                            for name, t in times.items()}
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(before)
    row = {"threads": threads, "stream_gbps": stream, "matmul_probe_gflops": probe, "weight_mb": weight_bytes / 1e6,
           "default_kernel": cpu_linear.DEFAULT, "rows": {str(m): v for m, v in table.items()}}
    _rows[f"threads={threads}"] = row
    path = write_result("cpu_gemm", {"machine": machine_info(), "shapes": "MiniLM-L6: 6 x (1152x384, 384x384, "
                                     "1536x384+GELU, 384x1536)", "runs": _rows})
    with capsys.disabled():
        print("\n" + cpu_gemm_table({"runs": _rows}) + f"\n-> {path}")
