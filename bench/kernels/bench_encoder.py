"""End-to-end student latency at batch 1 (one query, the online path) through backend="triton" vs "torch",
against the roofline bound of bench/roofline.py. Target: within 2x of the bound.

    python bench/kernels/bench_encoder.py [--model minilm] [--preset minilm-l6] [--lengths 8 16 32]
"""
import argparse

import torch
from common import bench_ms, fmt_row, gpu_key, require_cuda, save
from roofline import bound

from hlm_engine import Encoder
from hlm_engine.config import preset
from hlm_engine.models.packing import pack


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm", help="model name or folder (hlm_engine.models.resolve)")
    p.add_argument("--preset", default="minilm-l6", help="config preset for the roofline bound")
    p.add_argument("--lengths", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    require_cuda("bench_encoder")
    gpu = gpu_key()
    encs = {be: Encoder.from_pretrained(args.model, backend=be, device="cuda", dtype=torch.bfloat16)
            for be in ("triton", "torch")}
    rows = []
    for n in args.lengths:
        batch = pack([[101] + [2000 + i for i in range(n - 2)] + [102]] * args.batch, "cuda")
        row = dict(model=args.model, batch=args.batch, length=n)
        for be, enc in encs.items():
            with torch.inference_mode():
                row[f"{be}_us"] = bench_ms(lambda enc=enc: enc.embed_batch(batch)) * 1e3
        row["roofline_bound_us"] = bound(preset(args.preset), args.batch, n)[gpu]["bound_us"]
        row["triton_over_bound"] = row["triton_us"] / row["roofline_bound_us"]
        print(fmt_row(row))
        rows.append(row)
    save(f"encoder_{args.model}", rows)


if __name__ == "__main__":
    main()
