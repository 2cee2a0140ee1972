"""Memory-bound kernels vs PyTorch eager, in GB/s of compulsory traffic and fraction of HBM peak:
add_rmsnorm, add_layernorm, qk_norm_rope and pool, over token counts at the models' widths.

    python bench/kernels/bench_memory_bound.py [--dtype bf16]
"""
import argparse

import torch
from common import bench_ms, fmt_row, peak, require_cuda, save

from hlm_engine.kernels.add_layernorm import add_layernorm, add_layernorm_ref
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm, add_rmsnorm_ref
from hlm_engine.kernels.pool import pool, pool_ref
from hlm_engine.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref

TOKENS = [32, 512, 8192, 65536]


def cases(T, dtype):
    """(name, triton fn, eager fn, bytes moved) for T tokens."""
    r = lambda *s: torch.randn(*s, device="cuda", dtype=dtype)  # noqa: E731
    out = []
    for H in (1024, 4096):
        x, res, w = r(T, H), r(T, H), r(H)
        out.append((f"add_rmsnorm-H{H}", lambda x=x, res=res, w=w: add_rmsnorm(x, res, w, 1e-6),
                    lambda x=x, res=res, w=w: add_rmsnorm_ref(x, res, w, 1e-6), 4 * T * H * x.element_size()))
    for H in (384, 768):
        x, res, w, b = r(T, H), r(T, H), r(H), r(H)
        out.append((f"add_layernorm-H{H}", lambda x=x, res=res, w=w, b=b: add_layernorm(x, res, w, b, 1e-12),
                    lambda x=x, res=res, w=w, b=b: add_layernorm_ref(x, res, w, b, 1e-12),
                    4 * T * H * x.element_size()))
    q, k, qw, kw = r(T, 16, 128), r(T, 8, 128), r(128), r(128)
    pos = torch.arange(T, device="cuda") % 32
    out.append(("qk_norm_rope-16x8x128", lambda: qk_norm_rope(q, k, qw, kw, pos, 1e6, 1e-6),
                lambda: qk_norm_rope_ref(q, k, qw, kw, pos, 1e6, 1e-6), 2 * T * 24 * 128 * q.element_size()))
    h = r(T, 1024)
    cu = torch.arange(0, T + 1, 16, device="cuda", dtype=torch.int32)
    out.append(("pool-mean-H1024", lambda: pool(h, cu, "mean", 512, True), lambda: pool_ref(h, cu, "mean", 512, True),
                T * 1024 * h.element_size()))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    args = p.parse_args()
    require_cuda("bench_memory_bound")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    _, _, peak_gbs = peak()
    rows = []
    for T in TOKENS:
        for name, fused, eager, nbytes in cases(T, dtype):
            ms, ms_ref = bench_ms(fused), bench_ms(eager)
            row = dict(op=name, tokens=T, triton_ms=ms, triton_gbs=nbytes / ms / 1e6,
                       triton_peak_frac=nbytes / ms / 1e6 / peak_gbs, eager_ms=ms_ref, speedup=ms_ref / ms)
            print(fmt_row(row))
            rows.append(row)
    save("memory_bound", rows)


if __name__ == "__main__":
    main()
