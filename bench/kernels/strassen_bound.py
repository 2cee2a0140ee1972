"""How much one Strassen level could save on the batch-64 fp32 GEMMs (issue #16's last target), on our packed
CPU kernel: seven quarter GEMMs (M/2 x K/2 x N/2) against the full one, alternating, at MiniLM's four linear
shapes. The additions Strassen needs (13 quarter-matrix passes a GEMM) are NOT timed, so the ratio is an
upper bound on what the level can give.

    .venv/bin/python bench/kernels/strassen_bound.py [--rows 640] [--reps 30]
"""
import argparse
import time

import numpy as np

from hlm_engine.ops.cpu import ext

SHAPES = [("qkv", 1152, 384), ("out", 384, 384), ("ffn up", 1536, 384), ("ffn down", 384, 1536)]  # (N, K)


def packed(n, k):
    w = (np.random.default_rng(0).standard_normal((n, k)) * 0.05).astype(np.float32)
    return ext.EXT.PackedLinear(w.ctypes.data, n, k, 0, "fp32")  # packs a copy: w may go


def run(lin, x, y):
    m, k = x.shape
    t = time.perf_counter()
    lin.run(x.ctypes.data, m, k, y.ctypes.data, y.shape[1], False, 0, lin.panels)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=640, help="GEMM rows: a batch of 64 queries of ~10 tokens")
    ap.add_argument("--reps", type=int, default=30)
    a = ap.parse_args()
    if ext.EXT is None:
        raise SystemExit(f"the C++ extension is not usable here: {ext.WHY}")
    m = a.rows - a.rows % 2
    total_full = total_quarters = 0.0
    for name, n, k in SHAPES:
        full, quarter = packed(n, k), packed(n // 2, k // 2)
        x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
        xq = np.ascontiguousarray(x[: m // 2, : k // 2])
        y, yq = np.empty((m, n), np.float32), np.empty((m // 2, n // 2), np.float32)
        tf, tq = [], []
        for _ in range(a.reps):  # alternate so a noisy minute hits both sides
            tf.append(run(full, x, y))
            tq.append(sum(run(quarter, xq, yq) for _ in range(7)))
        f, q = float(np.median(tf)), float(np.median(tq))
        total_full, total_quarters = total_full + f, total_quarters + q
        print(f"{name:9s} N={n:5d} K={k:5d}: full {f * 1e3:6.2f} ms ({2 * m * n * k / f / 1e9:5.1f} GFLOP/s), "
              f"7 quarters {q * 1e3:6.2f} ms -> {f / q:.3f}x")
    print(f"a layer's four GEMMs: {total_full / total_quarters:.3f}x at most (additions not counted)")


if __name__ == "__main__":
    main()
