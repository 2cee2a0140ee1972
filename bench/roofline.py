"""Roofline bounds for one encoder forward: FLOPs and bytes of every op, and the fastest any kernel could
run it on an A100 or H100 (a lower bound on latency, an upper bound on throughput - not a measurement).

For each op, time >= max(FLOPs / peak FLOP/s, bytes / peak HBM bandwidth) (Williams, Waterman & Patterson,
"Roofline", CACM 2009). The forward runs its ops one after another, so the model's bound is the sum of the op
bounds. Bytes count each kernel's compulsory HBM traffic in bf16: weights once, activations in and out.
A second, separate floor counts kernel launches: without CUDA graphs every launch costs a few microseconds,
which dominates batch-1 latency of small students.

    python bench/roofline.py [--batch 1 64] [--lengths 8 16 32] [--out bench/results/roofline.json]
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from hlm_engine.config import EncoderConfig, preset
from hlm_engine.io import write_json


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_tflops: float    # dense tensor-core peak (no 2:4 sparsity)
    hbm_gbs: float        # HBM bandwidth
    source: str


# Peak figures from the vendor datasheets (SXM parts).
GPUS = {
    "A100": Gpu("A100-SXM4-80GB", 312.0, 2039.0,
                "NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 312 TFLOPS dense, HBM2e 2,039 GB/s"),
    "H100": Gpu("H100-SXM5-80GB", 989.4, 3350.0,
                "NVIDIA H100 Tensor Core GPU datasheet (2023): BF16 1,979 TFLOPS with sparsity = 989.4 dense, "
                "HBM3 3.35 TB/s"),
}
LAUNCH_US = 3.0   # typical per-kernel launch + tail cost without CUDA graphs (order of magnitude)
BYTES = 2         # bf16 activations and weights
MODELS = ["minilm-l6", "qwen3-190m", "qwen3-embedding-0.6b", "qwen3-embedding-4b", "qwen3-embedding-8b"]


@dataclass
class Op:
    name: str
    flops: float
    bytes: float
    kernels: int = 1

    def seconds(self, gpu: Gpu) -> float:
        return max(self.flops / (gpu.bf16_tflops * 1e12), self.bytes / (gpu.hbm_gbs * 1e9))


def _gemm(name, M, N, K, extra_bytes=0.0):
    """[M, K] x [K, N]: 2MNK FLOPs; weights [N, K], input and output each read or written once."""
    return Op(name, 2.0 * M * N * K, BYTES * (N * K + M * K + M * N) + extra_bytes)


def encoder_ops(cfg: EncoderConfig, batch: int, length: int) -> list[Op]:
    """Every op of one forward over `batch` texts of `length` tokens, summed over layers, in our fused form."""
    T, H, D = batch * length, cfg.hidden_size, cfg.head_dim
    nq, nkv, L = cfg.num_heads, cfg.num_kv_heads, cfg.num_layers
    decoder = cfg.is_decoder_style
    act = BYTES * T * H
    ops = [Op("embed", 0.0, 2 * act, 1)]
    if not decoder:  # BERT/MPNet: LayerNorm of the embeddings before the first layer
        ops.append(Op("embed_norm", 5.0 * T * H, 2 * act))
    qkv = [_gemm("qkv", T, (nq + 2 * nkv) * D, H) for _ in range(L)]
    # Attention FLOPs: QK^T and PV, 2 * 2 * L^2 * D per head per sequence (half of it under a causal mask).
    att_flops = 4.0 * batch * length * length * D * nq * (0.5 if cfg.causal else 1.0)
    att_bytes = BYTES * T * (2 * nq + 2 * nkv) * D
    if cfg.relative_attention_num_buckets:
        att_bytes += BYTES * nq * length * length
    per_layer = [
        Op("norm", 4.0 * T * H, (2 if decoder else 4) * act),
        Op("attention", att_flops, att_bytes),
        _gemm("o_proj", T, H, nq * D),
        Op("add_norm", 5.0 * T * H, 4 * act),
    ]
    if decoder:
        per_layer.append(Op("qk_norm_rope", 10.0 * T * (nq + nkv) * D, BYTES * 2 * T * (nq + nkv) * D))
    for layer_idx, inter in enumerate(cfg.intermediate_sizes):
        if decoder:  # gate/up GEMM with SiLU*mul epilogue, down GEMM with the residual add
            ffn = [_gemm("ffn_up", T, 2 * inter, H, extra_bytes=-BYTES * T * inter),
                   _gemm("ffn_down", T, H, inter, extra_bytes=act)]
        else:        # GEMM + bias + GELU, GEMM + bias (+ residual in the add_norm)
            ffn = [_gemm("ffn_up", T, inter, H), _gemm("ffn_down", T, H, inter)]
        ops += [qkv[layer_idx]] + per_layer + ffn
    if decoder:
        ops.append(Op("final_norm", 4.0 * T * H, 2 * act))
    ops.append(Op("pool", 2.0 * T * H, act))
    return _merge(ops)


def _merge(ops: list[Op]) -> list[Op]:
    """Sum same-named ops across layers, keeping first-seen order."""
    out: dict[str, Op] = {}
    for op in ops:
        if op.name in out:
            o = out[op.name]
            o.flops, o.bytes, o.kernels = o.flops + op.flops, o.bytes + op.bytes, o.kernels + op.kernels
        else:
            out[op.name] = Op(op.name, op.flops, op.bytes, op.kernels)
    return list(out.values())


def bound(cfg: EncoderConfig, batch: int, length: int) -> dict:
    ops = encoder_ops(cfg, batch, length)
    row = dict(model=cfg.name, batch=batch, length=length, gflop=sum(o.flops for o in ops) / 1e9,
               mbytes=sum(o.bytes for o in ops) / 1e6, kernels=sum(o.kernels for o in ops),
               ops={o.name: dict(gflop=o.flops / 1e9, mbytes=o.bytes / 1e6, kernels=o.kernels) for o in ops})
    row["launch_floor_us"] = row["kernels"] * LAUNCH_US
    for key, gpu in GPUS.items():
        t = sum(o.seconds(gpu) for o in ops)
        mem = sum(o.seconds(gpu) for o in ops if o.bytes / (gpu.hbm_gbs * 1e9) >= o.flops / (gpu.bf16_tflops * 1e12))
        row[key] = dict(bound_us=t * 1e6, max_texts_per_s=batch / t, memory_bound_share=mem / t,
                        op_us={o.name: o.seconds(gpu) * 1e6 for o in ops})
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'model':<24}{'B':>4}{'L':>4}{'GFLOP':>9}{'MB':>9}{'A100 us':>10}{'H100 us':>10}"
            f"{'H100 texts/s':>14}{'mem-bound':>10}{'kernels':>8}{'launch us':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<24}{r['batch']:>4}{r['length']:>4}{r['gflop']:>9.2f}{r['mbytes']:>9.1f}"
                     f"{r['A100']['bound_us']:>10.1f}{r['H100']['bound_us']:>10.1f}"
                     f"{r['H100']['max_texts_per_s']:>14,.0f}{r['H100']['memory_bound_share']:>10.0%}"
                     f"{r['kernels']:>8}{r['launch_floor_us']:>10.0f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS, help="config presets (hlm_engine.config.PRESETS)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 64])
    p.add_argument("--lengths", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "roofline.json"))
    args = p.parse_args(argv)
    rows = [bound(preset(m), b, n) for m in args.models for b in args.batch for n in args.lengths]
    print("Roofline BOUNDS (not measurements): bf16, per-op max(FLOPs/peak, bytes/HBM BW), summed over ops.")
    for gpu in GPUS.values():
        print(f"  {gpu.name}: {gpu.bf16_tflops} TFLOP/s, {gpu.hbm_gbs} GB/s  [{gpu.source}]")
    print(table(rows))
    print(f"launch us = kernels x {LAUNCH_US} us: the floor without CUDA graphs, separate from the roofline bound.")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_json(args.out, dict(gpus={k: vars(g) for k, g in GPUS.items()}, launch_us=LAUNCH_US, dtype_bytes=BYTES,
                              rows=rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
