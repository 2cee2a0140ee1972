"""The Python driver of bench/gpu_check.sh: one pass over the GPU path on a lent GPU, JSON out.

1. kernels: every launcher at the MiniLM, MPNet and Qwen3-student layer shapes (1x8, 64x16, 1x128 tokens) in
   fp16 and bf16 against its `_ref`, with the tests' rule: max|kernel - fp64| <= 2 max|torch - fp64| + atol;
2. speed: `triton.testing.do_bench` of each kernel (bf16) vs its PyTorch eager reference, attention also vs
   SDPA on a dense padded batch (PyTorch's best case);
3. encoder end to end (random weights, bf16): batch 1 x 8 tokens eager and through CUDA graphs, 64 x 16
   eager, against the roofline bound of bench/roofline.py and against the same model on PyTorch eager + SDPA.

--dry-run: the same driver on CPU at tiny sizes, kernels in the Triton interpreter (fp32/fp16: bf16 dots
are wrong there), wall-clock timing; checks the script, not the GPU. Written for Triton 3.6 and 3.7.

    python bench/gpu_check.py --out DIR [--dry-run] [--budget-s 420]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
import types

if importlib.util.find_spec("tokenizers") is None:  # the GPU image lacks it; nothing here tokenizes
    sys.modules["tokenizers"] = types.SimpleNamespace(Tokenizer=None)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/ for roofline
from roofline import GPUS, Gpu, encoder_ops  # noqa: E402

from hlm_engine.config import preset  # noqa: E402
from hlm_engine.kernels.add_layernorm import add_layernorm, add_layernorm_ref  # noqa: E402
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm, add_rmsnorm_ref  # noqa: E402
from hlm_engine.kernels.attention import varlen_attention, varlen_attention_ref  # noqa: E402
from hlm_engine.kernels.gelu_ffn import gelu_ffn, gelu_ffn_ref  # noqa: E402
from hlm_engine.kernels.linear import linear, linear_ref  # noqa: E402
from hlm_engine.kernels.pool import pool, pool_ref  # noqa: E402
from hlm_engine.kernels.qk_norm_rope import qk_norm_rope, qk_norm_rope_ref  # noqa: E402
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn, swiglu_ffn_ref  # noqa: E402

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
MODELS = {"minilm": "minilm-l6", "mpnet": "mpnet-base", "qwen3": "qwen3-190m"}
# H200: H100's tensor cores, HBM3e at 4.8 TB/s (NVIDIA H200 datasheet, 2024).
H200 = Gpu("H200-SXM-141GB", 989.4, 4800.0, "NVIDIA H200 Tensor Core GPU datasheet (2024): HBM3e 4.8 TB/s")
TINY = dict(hidden_size=64, num_layers=1, intermediate_sizes=[96], vocab_size=128)


def config(model: str, dry: bool):
    cfg = preset(MODELS[model])
    if not dry:
        return cfg
    heads = dict(num_heads=4, num_kv_heads=2, head_dim=16) if cfg.is_decoder_style else \
        dict(num_heads=2, num_kv_heads=2, head_dim=32)
    return preset(MODELS[model], **TINY, **heads)


def cases(model: str, batch: int, length: int, dtype, dev, dry: bool) -> dict:
    """op -> (kernel thunk, reference fn, args): the layer's launches as hlm_engine.models calls them."""
    cfg = config(model, dry)
    T, H, nq, nkv, hd = batch * length, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    inter = cfg.intermediate_sizes[0]
    g = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, device=dev) * scale).to(dtype)  # noqa: E731
    w = lambda n, k: r(n, k, scale=k ** -0.5)  # noqa: E731
    cu = torch.arange(0, T + 1, length, dtype=torch.int32, device=dev)
    x, res = r(T, H), r(T, H)
    if not cfg.is_decoder_style:
        qkv = r(T, 3, nq, hd)
        bias = r(nq, length, length) if cfg.relative_attention_num_buckets else None
        return {
            "embed_norm": (add_layernorm, add_layernorm_ref, (x, None, r(H), r(H), cfg.norm_eps)),
            "qkv": (linear, linear_ref, (x, w(3 * H, H), r(3 * H))),
            "attention": (varlen_attention, varlen_attention_ref,
                          (qkv[:, 0], qkv[:, 1], qkv[:, 2], cu, length, False, None, bias)),
            "o_proj": (linear, linear_ref, (x, w(H, H), r(H))),
            "add_norm": (add_layernorm, add_layernorm_ref, (x, res, r(H), r(H), cfg.norm_eps)),
            "ffn": (gelu_ffn, gelu_ffn_ref, (x, w(inter, H), r(inter), w(H, inter), r(H))),
            "pool": (pool, pool_ref, (x, cu, "mean")),
        }
    qkv = r(T, (nq + 2 * nkv) * hd)
    q, k = qkv[:, :nq * hd].view(T, nq, hd), qkv[:, nq * hd:(nq + nkv) * hd].view(T, nkv, hd)
    pos = torch.arange(length, device=dev).repeat(batch)
    return {
        "norm": (add_rmsnorm, add_rmsnorm_ref, (x, None, r(H), cfg.norm_eps)),
        "qkv": (linear, linear_ref, (x, w((nq + 2 * nkv) * hd, H))),
        "qk_norm_rope": (qk_norm_rope, qk_norm_rope_ref, (q, k, r(hd), r(hd), pos, cfg.rope_theta, cfg.norm_eps)),
        "attention": (varlen_attention, varlen_attention_ref,
                      (r(T, nq, hd), r(T, nkv, hd), r(T, nkv, hd), cu, length, True)),
        "o_proj": (linear, linear_ref, (r(T, nq * hd), w(H, nq * hd))),
        "add_norm": (add_rmsnorm, add_rmsnorm_ref, (x, res, r(H), cfg.norm_eps)),
        "ffn": (swiglu_ffn, swiglu_ffn_ref, (x, w(2 * inter, H), w(H, inter), res)),
        "pool": (pool, pool_ref, (x, cu, "last")),
    }


def _outs(o):
    return list(o) if isinstance(o, (tuple, list)) else [o]


def check(kernel, ref, args, dtype) -> dict:
    """max error of the kernel and of PyTorch in `dtype`, both against the reference in fp64."""
    up = [a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
    got, want, exact = _outs(kernel(*args)), _outs(ref(*args)), _outs(ref(*up))
    err = max((a.double() - e).abs().max().item() for a, e in zip(got, exact))
    torch_err = max((a.double() - e).abs().max().item() for a, e in zip(want, exact))
    finite = all(bool(torch.isfinite(a).all()) for a in got)
    bound = 2 * torch_err + ATOL[dtype]
    return dict(err=err, torch_err=torch_err, bound=bound, ok=finite and err <= bound)


def timer(dry: bool):
    if not dry:
        from triton.testing import do_bench
        return lambda fn: do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e3  # us
    def wall(fn, reps=2):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e6
    return wall


def sdpa_dense(args, causal):
    """SDPA on a dense [B, H, L, D] batch of the same size: no padding work, PyTorch's best case."""
    q, k, cu, length = args[0], args[1], args[3], args[4]
    B, hq, hkv, d = cu.numel() - 1, q.shape[1], k.shape[1], q.shape[2]
    qd = torch.randn(B, hq, length, d, device=q.device, dtype=q.dtype)
    kd, vd = (torch.randn(B, hkv, length, d, device=q.device, dtype=q.dtype) for _ in range(2))
    return lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=causal, enable_gqa=hq != hkv)


def kernel_pass(res, dev, dry, deadline):
    shapes = [(1, 5), (2, 7)] if dry else [(1, 8), (64, 16), (1, 128)]
    dtypes = [torch.float32, torch.float16] if dry else [torch.float16, torch.bfloat16]
    bench_dtype = dtypes[-1]
    us = timer(dry)
    for model in MODELS:
        for batch, length in shapes:
            for dtype in dtypes:
                for op, (kernel, ref, args) in cases(model, batch, length, dtype, dev, dry).items():
                    if time.time() > deadline:
                        res["errors"].append(f"time budget reached before {model} {batch}x{length} {op}")
                        return
                    row = dict(model=model, shape=f"{batch}x{length}", dtype=str(dtype).split(".")[-1], op=op)
                    try:
                        row.update(check(kernel, ref, args, dtype))
                        if dtype == bench_dtype:
                            row["kernel_us"] = us(lambda: kernel(*args))
                            row["eager_us"] = us(lambda: ref(*args))
                            row["speedup_vs_eager"] = row["eager_us"] / row["kernel_us"]
                            if op == "attention":
                                row["sdpa_dense_us"] = us(sdpa_dense(args, model == "qwen3"))
                                row["frac_of_sdpa_dense"] = row["sdpa_dense_us"] / row["kernel_us"]
                    except Exception as e:  # record and go on: one broken kernel must not hide the rest
                        row.update(ok=False, error=f"{type(e).__name__}: {e}"[:400])
                    if not row.get("ok"):
                        res["errors"].append(f"kernel {row}")
                    res["kernels"].append(row)
                    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                          flush=True)


def bound_us(cfg, batch, length):
    ops = encoder_ops(cfg, batch, length)
    return {key: sum(o.seconds(gpu) for o in ops) * 1e6 for key, gpu in {**GPUS, "H200": H200}.items()}


def encoder_pass(res, dev, dry, deadline):
    from hlm_engine.models import build_model
    from hlm_engine.models.packing import pack
    dtype = torch.float32 if dry else torch.bfloat16
    us = timer(dry)
    runs = [(1, 5), (2, 7)] if dry else [(1, 8), (64, 16)]
    for model in ("minilm", "qwen3") if dry else ("minilm", "mpnet", "qwen3"):
        if time.time() > deadline:
            res["errors"].append(f"time budget reached before the {model} encoder")
            return
        cfg = config(model, dry)
        try:
            torch.manual_seed(0)
            ref = build_model(cfg, "torch").to(dev, dtype).eval()
            tri = build_model(cfg, "triton").to(dev, dtype).eval()
            tri.load_state_dict(ref.state_dict())
        except Exception as e:
            res["errors"].append(f"encoder {model}: build failed: {type(e).__name__}: {e}")
            continue
        for batch, length in runs:
            b = pack([[5 + (i * 7 + j) % 100 for j in range(length)] for i in range(batch)], dev)
            fwd = {name: (lambda m=m: m.ops.pool(m(b), b.cu_seqlens, cfg.pooling, None, True))
                   for name, m in (("triton", tri), ("torch_sdpa", ref))}
            row = dict(model=model, batch=batch, length=length, dtype=str(dtype).split(".")[-1])
            try:
                with torch.inference_mode():
                    a, e = fwd["triton"]().float(), fwd["torch_sdpa"]().float()
                    row["min_cosine_vs_torch"] = F.cosine_similarity(a, e, dim=-1).min().item()
                    for name, fn in fwd.items():
                        row[f"{name}_us"] = us(fn)
                    if batch == 1 and dev.type == "cuda":
                        from hlm_engine.models.cuda_graphs import CudaGraphRunner
                        runner = CudaGraphRunner(lambda bb: tri.ops.pool(tri(bb), bb.cu_seqlens, cfg.pooling, None,
                                                                         True), dev, [(1, length)], cfg.pad_token_id)
                        runner(b)
                        row["triton_graph_us"] = us(lambda: runner(b))
                row["speedup_vs_torch_sdpa"] = row["torch_sdpa_us"] / row["triton_us"]
                for key, t in bound_us(preset(MODELS[model]), batch, length).items():
                    row[f"roofline_{key}_us"] = t
                best = row.get("triton_graph_us", row["triton_us"])
                row["best_over_H200_bound"] = best / row["roofline_H200_us"]
                row["ok"] = row["min_cosine_vs_torch"] >= (0.9999 if dry else 0.99)
            except Exception as e:
                row.update(ok=False, error=f"{type(e).__name__}: {e}"[:400], trace=traceback.format_exc()[-800:])
            if not row.get("ok"):
                res["errors"].append(f"encoder {row}")
            res["encoder"].append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                           if k != "trace"), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new checks after this")
    args = p.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --dry-run on CPU)")
    if dry and not triton.knobs.runtime.interpret:
        raise SystemExit("gpu_check --dry-run: set TRITON_INTERPRET=1 before starting Python")
    dev = torch.device("cpu" if dry else "cuda")
    t0 = time.time()
    res = dict(dry_run=dry, python=platform.python_version(), torch=torch.__version__, triton=triton.__version__,
               device=torch.cuda.get_device_name() if not dry else "cpu (interpreter)",
               stubbed=["tokenizers"] if isinstance(sys.modules.get("tokenizers"), types.SimpleNamespace) else [],
               kernels=[], encoder=[], errors=[])
    deadline = t0 + args.budget_s
    kernel_pass(res, dev, dry, deadline - (0 if dry else 90))  # keep ~90 s for the encoder pass
    encoder_pass(res, dev, dry, deadline)
    res["wall_s"] = time.time() - t0
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gpu_check.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {path}: {len(res['kernels'])} kernel rows, {len(res['encoder'])} encoder rows, "
          f"{len(res['errors'])} errors, {res['wall_s']:.0f} s")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
