"""GPU compile gate: every Triton kernel of hlm_engine.kernels, compiled for sm_80 (A100) and sm_90 (H100)
without a GPU, at the MiniLM, MPNet and 4-layer Qwen3 student shapes, through the launchers' own
meta-parameters.

Method: Triton's active driver is replaced by one whose target is GPUTarget("cuda", 80 | 90, 32); the kernel
module's compile-only mode (`kernels._common.compile_only`) accepts CPU tensors, answers the target's SM count
(108 / 132) to the launch heuristics and turns every launch into `kernel.warmup` (compile, no run). Per launch:
registers and spills from the wheel's `ptxas -v` on the kernel's PTX, shared memory and warps from the compiled
metadata, tensor-core instructions from the PTX (mma.sync = HMMA, wgmma = HGMMA), programs launched against
SMs, and tile use = real rows / (programs x rows of the program's tile).

Fails on: a compile error; register spills in a 16-bit path; shared memory over the arch limit (163 / 227 KB);
a 16-bit tl.dot without tensor-core instructions. fp32 rows are reported, not gated (fp32 is the CPU dtype).
Results are cached per configuration under ~/.cache/hlm/gpu_static, keyed by the kernels' source, the Triton
version and the configuration: a rerun with unchanged kernels only reads the cache.

    TRITON_INTERPRET=0 python bench/gpu_static.py [--arch 80 90] [--json out.json] [--summary] [--no-cache]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    raise SystemExit("gpu_static: unset TRITON_INTERPRET (the gate compiles kernels; the interpreter runs them)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402

from hlm_engine.config import preset  # noqa: E402
from hlm_engine.kernels import _common  # noqa: E402
from hlm_engine.kernels.add_layernorm import add_layernorm  # noqa: E402
from hlm_engine.kernels.add_rmsnorm import add_rmsnorm  # noqa: E402
from hlm_engine.kernels.attention import varlen_attention  # noqa: E402
from hlm_engine.kernels.gelu_ffn import gelu_ffn  # noqa: E402
from hlm_engine.kernels.linear import linear  # noqa: E402
from hlm_engine.kernels.pool import pool  # noqa: E402
from hlm_engine.kernels.qk_norm_rope import qk_norm_rope  # noqa: E402
from hlm_engine.kernels.swiglu_ffn import swiglu_ffn  # noqa: E402

KERNELS_DIR = os.path.dirname(os.path.realpath(_common.__file__))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "hlm", "gpu_static")
# The committed results of the last full gate run (`--write-seed`), keyed by the same source key: a clean
# clone (CI) with unchanged kernels reads them instead of compiling ~400 configurations (~11 min on 2 cores).
# Any kernel edit, another Triton or torch version changes the key, and the gate compiles again.
SEED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gpu_static_seed.json")
GATE_VERSION = "1"  # bump when the measurement (not the kernels) changes
# SMs, shared memory a block may opt into, registers and warps per SM (CUDA programming guide, compute
# capabilities table: 8.0 and 9.0 both have 64K registers and 64 warps per SM).
ARCHS = {80: dict(gpu="A100", sms=108, smem=163 * 1024), 90: dict(gpu="H100", sms=132, smem=227 * 1024)}
REGS_PER_SM, MAX_WARPS, MAX_BLOCKS = 65536, 64, 32
MODELS = {"minilm": "minilm-l6", "mpnet": "mpnet-base", "qwen3": "qwen3-190m"}
SHAPES = {"1x8": (1, 8), "64x16": (64, 16), "1x128": (1, 128)}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class CompileOnlyDriver:
    """Triton driver stand-in: a CUDA target of the given capability, no device behind it. The JIT asks the
    active driver for the target, a device id (the arch here, so each arch has its own kernel cache) and a
    stream; warm-up never launches, so nothing else is needed."""

    def __init__(self, arch: int):
        self.arch = arch

    def get_current_target(self):
        return GPUTarget("cuda", self.arch, 32)

    def get_current_device(self):
        return self.arch

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")

    @staticmethod
    def is_active():
        return True


# ------------------------------------------------------------------------------------------ the model's ops
def model_ops(model: str, batch: int, length: int, dtype: torch.dtype) -> dict:
    """name -> thunk calling one launcher as the model's layer does (the shapes of hlm_engine.models)."""
    cfg = preset(MODELS[model])
    T, H, nq, nkv, hd = batch * length, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    inter = cfg.intermediate_sizes[0]
    e = lambda *s: torch.empty(*s, dtype=dtype)  # noqa: E731 - warm-up reads shapes, strides and dtypes only
    cu = torch.arange(0, T + 1, length, dtype=torch.int32)
    x = e(T, H)
    if not cfg.is_decoder_style:  # BERT / MPNet: post-norm, biases, GELU FFN, mean pooling
        qkv = e(T, 3, nq, hd)
        bias = e(nq, length, length) if cfg.relative_attention_num_buckets else None
        return {
            "embed_norm": lambda: add_layernorm(x, None, e(H), e(H), cfg.norm_eps),
            "qkv": lambda: linear(x, e(3 * H, H), e(3 * H)),
            "attention": lambda: varlen_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu, length, False, None, bias),
            "o_proj": lambda: linear(x, e(H, H), e(H)),
            "add_norm": lambda: add_layernorm(x, x, e(H), e(H), cfg.norm_eps),
            "ffn": lambda: gelu_ffn(x, e(inter, H), e(inter), e(H, inter), e(H)),
            "pool": lambda: pool(x, cu, "mean"),
        }
    qkv = e(T, (nq + 2 * nkv) * hd)
    q, k = qkv[:, :nq * hd].view(T, nq, hd), qkv[:, nq * hd:(nq + nkv) * hd].view(T, nkv, hd)
    return {  # Qwen3: pre-norm, GQA, q/k RMSNorm + RoPE, SwiGLU with the residual in the down GEMM
        "norm": lambda: add_rmsnorm(x, None, e(H), cfg.norm_eps),
        "qkv": lambda: linear(x, e((nq + 2 * nkv) * hd, H)),
        "qk_norm_rope": lambda: qk_norm_rope(q, k, e(hd), e(hd), torch.zeros(T, dtype=torch.int64), 1e6, 1e-6),
        "attention": lambda: varlen_attention(e(T, nq, hd), e(T, nkv, hd), e(T, nkv, hd), cu, length, True),
        "o_proj": lambda: linear(e(T, nq * hd), e(H, nq * hd)),
        "add_norm": lambda: add_rmsnorm(x, x, e(H), cfg.norm_eps),
        "ffn": lambda: swiglu_ffn(x, e(2 * inter, H), e(H, inter), x),
        "pool": lambda: pool(x, cu, "last"),
    }


# ------------------------------------------------------------------------------------------ measurements
_PTXAS: dict = {}


def ptxas_stats(ptx: str, arch: int) -> dict:
    """Registers, spill bytes and stack frame from `ptxas -v` (the wheel's ptxas, Triton's own flags).
    Kept on disk by the PTX's hash: after a kernel edit Triton recompiles only what changed, and so do we."""
    key = hashlib.sha256(f"{triton.__version__}|{arch}\n{ptx}".encode()).hexdigest()[:32]
    path = os.path.join(CACHE, "ptxas", key + ".json")
    if key not in _PTXAS and os.path.exists(path):
        with open(path) as f:
            _PTXAS[key] = json.load(f)
    if key in _PTXAS:
        return _PTXAS[key]
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        log = subprocess.run([get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                              f"--gpu-name={sm_arch_from_capability(arch)}", src, "-o", src + ".o"],
                             capture_output=True, text=True, check=True).stderr
    num = lambda pat: int(m.group(1)) if (m := re.search(pat, log)) else 0  # noqa: E731
    _PTXAS[key] = dict(regs=num(r"Used (\d+) registers"), spill_stores=num(r"(\d+) bytes spill stores"),
                       spill_loads=num(r"(\d+) bytes spill loads"), stack=num(r"(\d+) bytes stack frame"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_PTXAS[key], f)
    return _PTXAS[key]


def occupancy(regs: int, warps: int, smem: int, arch: int) -> int:
    """Resident warps per SM: the least of the register file (allocated per warp in 256-register units),
    shared memory, the warp limit and the block limit."""
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    blocks = min(REGS_PER_SM // (per_warp * warps), MAX_WARPS // warps, MAX_BLOCKS,
                 (ARCHS[arch]["smem"] + 1024) // (smem + 1024) if smem else MAX_BLOCKS)
    return blocks * warps


def launch_row(launch, arch: int, dtype_name: str) -> dict:
    k = launch.compiled
    ptx, ttir = k.asm["ptx"], k.asm["ttir"]
    stats = ptxas_stats(ptx, arch)
    smem, warps = int(k.metadata.shared), int(k.metadata.num_warps)
    programs = 1
    for g in launch.grid:
        programs *= int(g)
    tc = "HGMMA" if "wgmma" in ptx else ("HMMA" if "mma.sync" in ptx else "")
    return dict(kernel=launch.kernel.removeprefix("_").removesuffix("_kernel"), path=launch.path, **stats,
                smem=smem, warps=warps, warps_per_sm=occupancy(stats["regs"], warps, smem, arch),
                programs=programs, programs_per_sm=programs / ARCHS[arch]["sms"],
                tile_use=min(1.0, launch.rows / max(1, programs * launch.tile_rows)) if launch.tile_rows else None,
                dot="tt.dot" in ttir, tensor_cores=tc, meta={k: v for k, v in launch.meta.items() if k.isupper()})


def failures_of(row: dict) -> list[str]:
    why = []
    if row.get("error"):
        return [f"compile error: {row['error']}"]
    low = row["dtype"] != "fp32"
    if low and (row["spill_stores"] or row["spill_loads"]):
        why.append(f"{row['spill_stores']} B spill stores / {row['spill_loads']} B spill loads in a 16-bit path")
    if row["smem"] > ARCHS[row["arch"]]["smem"]:
        why.append(f"shared memory {row['smem']} B > {ARCHS[row['arch']]['smem']} B")
    if low and row["dot"] and not row["tensor_cores"]:
        why.append("16-bit tl.dot without tensor-core instructions")
    return why


# ------------------------------------------------------------------------------------------ the gate
def source_key() -> str:
    h = hashlib.sha256(f"{GATE_VERSION}|{triton.__version__}|{torch.__version__.split('+')[0]}".encode())
    for name in sorted(os.listdir(KERNELS_DIR)):
        if name.endswith(".py"):
            with open(os.path.join(KERNELS_DIR, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def compile_config(model, shape, dtype_name, arch, op) -> list[dict]:
    batch, length = SHAPES[shape]
    base = dict(model=model, shape=shape, dtype=dtype_name, arch=arch, op=op)
    prev = getattr(driver, "_active", None)  # reset_active() would probe for a GPU, and there is none
    driver.set_active(CompileOnlyDriver(arch))
    try:
        with _common.compile_only(ARCHS[arch]["sms"]) as launches:
            model_ops(model, batch, length, DTYPES[dtype_name])[op]()
        return [dict(base, **launch_row(ln, arch, dtype_name)) for ln in launches]
    except Exception as e:  # a compile error is a result of the gate, not a crash of it
        msg = f"{type(e).__name__}: {e}".strip().splitlines()
        return [dict(base, kernel=op, path="", error=" | ".join(msg[:3])[:500])]
    finally:
        driver._active = prev


def run_gate(archs=tuple(ARCHS), models=tuple(MODELS), shapes=tuple(SHAPES), dtypes=tuple(DTYPES),
             use_cache: bool = True, log=None) -> list[dict]:
    """Rows (one per kernel launch) for every (model, shape, dtype, arch, op); cached per configuration."""
    key = source_key()
    cache = os.path.join(CACHE, key)
    os.makedirs(cache, exist_ok=True)
    seed = _read_seed(key) if use_cache else {}
    rows, fresh, t0 = [], 0, time.time()
    configs = [(m, s, d, a, op) for m in models for s in shapes for d in dtypes for a in archs
               for op in model_ops(m, 1, 8, torch.float16)]
    for i, cfg in enumerate(configs):
        name = "_".join(map(str, cfg))
        path = os.path.join(cache, name + ".json")
        if name in seed:
            rows += [dict(r) for r in seed[name]]
            continue
        if use_cache and os.path.exists(path):
            with open(path) as f:
                rows += json.load(f)
            continue
        got = compile_config(*cfg)
        fresh += 1
        if not any(r.get("error") for r in got):  # errors are retried next time, not remembered
            with open(path + ".tmp", "w") as f:
                json.dump(got, f)
            os.replace(path + ".tmp", path)
        rows += got
        if log and fresh % 20 == 0:
            log(f"  compiled {fresh} configurations ({i + 1}/{len(configs)}), {time.time() - t0:.0f} s")
    for r in rows:
        r["failures"] = failures_of(r)
    if log:
        log(f"{len(configs)} configurations ({fresh} compiled, {len(configs) - fresh} cached) in "
            f"{time.time() - t0:.0f} s; cache {cache}")
    return rows


def _read_seed(key: str) -> dict:
    try:
        with open(SEED) as f:
            seed = json.load(f)
    except (OSError, ValueError):
        return {}
    return seed.get("configs", {}) if seed.get("source_key") == key else {}


def write_seed(rows: list[dict]) -> None:
    """Commit-able results of a complete, error-free gate run, grouped by configuration."""
    configs: dict[str, list] = {}
    for r in rows:
        name = "_".join(map(str, (r["model"], r["shape"], r["dtype"], r["arch"], r["op"])))
        configs.setdefault(name, []).append({k: v for k, v in r.items() if k != "failures"})
    with open(SEED + ".tmp", "w") as f:
        json.dump(dict(source_key=source_key(), triton=triton.__version__, configs=configs), f, separators=(",", ":"))
    os.replace(SEED + ".tmp", SEED)


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if not r.get("error")]
    low = [r for r in ok if r["dtype"] != "fp32"]
    return dict(configurations=len({(r["model"], r["shape"], r["dtype"], r["arch"], r["op"]) for r in rows}),
                launches=len(rows), errors=sum(1 for r in rows if r.get("error")),
                failures=sum(1 for r in rows if r["failures"]),
                max_regs_16bit=max((r["regs"] for r in low), default=0),
                spilling_16bit=sum(1 for r in low if r["spill_stores"] or r["spill_loads"]),
                spilling_fp32=sum(1 for r in ok if r["dtype"] == "fp32" and (r["spill_stores"] or r["spill_loads"])),
                max_smem_kb=max((r["smem"] for r in ok), default=0) / 1024,
                dots_16bit=sum(1 for r in low if r["dot"]),
                dots_16bit_on_tensor_cores=sum(1 for r in low if r["dot"] and r["tensor_cores"]),
                hgmma_sm90=sum(1 for r in low if r["tensor_cores"] == "HGMMA"))


def table(rows: list[dict]) -> str:
    head = (f"{'model':<7}{'shape':<7}{'dtype':<6}{'sm':>3} {'op':<13}{'kernel':<24}{'path':<12}{'regs':>5}"
            f"{'spill':>6}{'smem KB':>8}{'warps':>6}{'w/SM':>5}{'progs':>7}{'p/SM':>6}{'tile':>6} {'TC':<6}status")
    out = [head, "-" * len(head)]
    for r in rows:
        if r.get("error"):
            out.append(f"{r['model']:<7}{r['shape']:<7}{r['dtype']:<6}{r['arch']:>3} {r['op']:<13}ERROR {r['error']}")
            continue
        tile = f"{r['tile_use']:.0%}" if r["tile_use"] is not None else "-"
        out.append(f"{r['model']:<7}{r['shape']:<7}{r['dtype']:<6}{r['arch']:>3} {r['op']:<13}{r['kernel']:<24}"
                   f"{r['path']:<12}{r['regs']:>5}{r['spill_stores']:>6}{r['smem'] / 1024:>8.1f}{r['warps']:>6}"
                   f"{r['warps_per_sm']:>5}{r['programs']:>7}{r['programs_per_sm']:>6.2f}{tile:>6} "
                   f"{r['tensor_cores'] or '-':<6}{'; '.join(r['failures']) or 'ok'}")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", type=int, default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--json", help="write rows and summary to this file")
    p.add_argument("--summary", action="store_true", help="print only the summary and the failures")
    p.add_argument("--no-cache", action="store_true", help="compile everything (ignore the cache and the seed)")
    p.add_argument("--write-seed", action="store_true",
                   help=f"store an error-free full run as the committed seed ({os.path.relpath(SEED)})")
    args = p.parse_args(argv)
    rows = run_gate(tuple(args.arch), tuple(args.models), tuple(args.shapes), tuple(args.dtypes),
                    use_cache=not args.no_cache, log=lambda s: print(s, file=sys.stderr, flush=True))
    summ = summary(rows)
    if not args.summary:
        print(table(rows))
    for r in rows:
        if r["failures"]:
            print(f"FAIL {r['model']} {r['shape']} {r['dtype']} sm_{r['arch']} {r['op']} {r['kernel']}: "
                  f"{'; '.join(r['failures'])}")
    print(json.dumps(summ))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary=summ, rows=rows), f, indent=1)
    if args.write_seed and not summ["errors"] and len(args.arch) == len(ARCHS) and len(args.models) == len(MODELS) \
            and len(args.shapes) == len(SHAPES) and len(args.dtypes) == len(DTYPES):
        write_seed(rows)
    return 1 if summ["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
