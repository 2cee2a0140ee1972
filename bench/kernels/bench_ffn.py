"""Fused FFNs vs PyTorch eager: SwiGLU (Qwen3 190M/0.6B student shapes) and GELU (MiniLM, MPNet).
Sweeps the token count; reports TFLOP/s, fraction of the bf16 peak and the speedup (target >= 1.3x eager).

    python bench/kernels/bench_ffn.py [--dtype bf16]
"""
import argparse

import torch
from common import bench_ms, fmt_row, peak, require_cuda, save

from hlm_engine.kernels.gelu_ffn import gelu_ffn, gelu_ffn_ref
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn, swiglu_ffn_ref

SHAPES = {"qwen3-swiglu": ("swiglu", 1024, 3072), "minilm-gelu": ("gelu", 384, 1536), "mpnet-gelu": ("gelu", 768, 3072)}
TOKENS = [8, 32, 128, 512, 2048, 8192]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    args = p.parse_args()
    require_cuda("bench_ffn")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    _, peak_tflops, _ = peak()
    rows = []
    for shape, (kind, H, I) in SHAPES.items():
        for T in TOKENS:
            mk = lambda *s: torch.randn(*s, device="cuda", dtype=dtype) * s[-1] ** -0.5  # noqa: E731
            x, res = mk(T, H), mk(T, H)
            if kind == "swiglu":
                wgu, wd = mk(2 * I, H), mk(H, I)
                fused = lambda: swiglu_ffn(x, wgu, wd, res)  # noqa: E731
                eager = lambda: swiglu_ffn_ref(x, wgu, wd, res)  # noqa: E731
                flops = 2.0 * T * H * 2 * I + 2.0 * T * I * H
            else:
                w1, b1, w2, b2 = mk(I, H), mk(I), mk(H, I), mk(H)
                fused = lambda: gelu_ffn(x, w1, b1, w2, b2, res)  # noqa: E731
                eager = lambda: gelu_ffn_ref(x, w1, b1, w2, b2, res)  # noqa: E731
                flops = 4.0 * T * H * I
            ms, ms_ref = bench_ms(fused), bench_ms(eager)
            row = dict(shape=shape, tokens=T, triton_ms=ms, triton_tflops=flops / ms / 1e9,
                       triton_peak_frac=flops / ms / 1e9 / peak_tflops, eager_ms=ms_ref, speedup=ms_ref / ms)
            print(fmt_row(row))
            rows.append(row)
    save("ffn", rows)


if __name__ == "__main__":
    main()
