"""Varlen attention: Triton kernel vs the PyTorch reference (padded SDPA), SDPA on a dense batch (no
padding cost: the best PyTorch can do), and flash-attn's varlen kernel when installed.

Sweeps the query length (8..128, the serving range) at Qwen3 (16 q / 8 kv heads, d=128, causal) and MiniLM
(12 heads, d=32, bidirectional) shapes.  Target: >= 70% of flash-attn varlen's throughput.

    python bench/kernels/bench_attention.py [--batch 64] [--dtype bf16]
"""
import argparse

import torch
import torch.nn.functional as F
from common import bench_ms, fmt_row, peak, require_cuda, save

from hlm_engine.kernels.attention import varlen_attention, varlen_attention_ref

SHAPES = {"qwen3": (16, 8, 128, True), "minilm": (12, 12, 32, False)}
LENGTHS = [8, 16, 32, 64, 128]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    args = p.parse_args()
    require_cuda("bench_attention")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        flash_attn_varlen_func = None
        print("flash-attn not installed: comparing with SDPA only")
    dev, peak_tflops, _ = peak()
    rows = []
    for shape, (hq, hkv, d, causal) in SHAPES.items():
        for n in LENGTHS:
            B = args.batch
            # Lengths spread over [n/2, n] so the batch is really ragged.
            lens = torch.linspace(max(1, n // 2), n, B).round().int().tolist()
            T, L = sum(lens), max(lens)
            cu = torch.zeros(B + 1, dtype=torch.int32, device="cuda")
            cu[1:] = torch.tensor(lens, device="cuda").cumsum(0)
            q = torch.randn(T, hq, d, device="cuda", dtype=dtype)
            k, v = (torch.randn(T, hkv, d, device="cuda", dtype=dtype) for _ in range(2))
            flops = sum(4.0 * x * x * d * hq * (0.5 if causal else 1.0) for x in lens)
            row = dict(shape=shape, length=n, batch=B, tokens=T)
            ms = bench_ms(lambda: varlen_attention(q, k, v, cu, L, causal))
            row.update(triton_ms=ms, triton_tflops=flops / ms / 1e9, triton_peak_frac=flops / ms / 1e9 / peak_tflops)
            ms_ref = bench_ms(lambda: varlen_attention_ref(q, k, v, cu, L, causal))
            row.update(torch_ref_ms=ms_ref, speedup_vs_torch_ref=ms_ref / ms)
            qd = torch.randn(B, hq, L, d, device="cuda", dtype=dtype)
            kd, vd = (torch.randn(B, hkv, L, d, device="cuda", dtype=dtype) for _ in range(2))
            ms_sdpa = bench_ms(lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=causal,
                                                                      enable_gqa=hq != hkv))
            row.update(sdpa_dense_ms=ms_sdpa, speedup_vs_sdpa_dense=ms_sdpa / ms)
            if flash_attn_varlen_func is not None:
                ms_fa = bench_ms(lambda: flash_attn_varlen_func(q, k, v, cu, cu, L, L, causal=causal))
                row.update(flash_attn_ms=ms_fa, frac_of_flash_attn=ms_fa / ms)
            print(fmt_row(row))
            rows.append(row)
    save("attention", rows)


if __name__ == "__main__":
    main()
