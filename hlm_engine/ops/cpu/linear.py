"""fp32 CPU inference GEMMs on weights packed once for small batches.

Why: online query encoding is batch 1. A query is ~8 tokens, so every linear is an M≈8 GEMM that streams
the whole weight matrix once, and MKL's sgemm on nn.Linear's row-major [N, K] layout reaches only ~5 GB/s
of weight traffic at that shape on AVX2 EPYC. Two packed kernels serve it, picked once per backend:

- "hlm" (default where built and the CPU has AVX2+FMA): our own register-blocked kernel over 16-column
  weight panels with the GELU in its epilogue (csrc/small_gemm.h, `hlm_engine._cpu_kernels`); ~1.8x oneDNN's
  and ~2.5x MKL's speed at M≈6 on one core (~80% of the core's DRAM stream), no slower than MKL up to a
  few hundred rows (bench/test_cpu_gemm.py, README).
- "onednn": oneDNN's brgemm on weights reordered for the CPU's vector width (~1.2-1.4x MKL at M≈6),
  the fallback where our extension is not built (HLM_BUILD_EXT=0) or the CPU lacks AVX2.

Both compute the same fp32 dot products as F.linear (only the summation order differs: |Δ| ~ 1e-6).
Bigger batches than each kernel's row limit stay on MKL, which is compute-bound there.

The packed copy is made once per weight and cached beside it (keyed by the tensor's identity, dropped
when the weight is freed; not stored on the tensor, which would break pickling the module), tagged with
its version counter, so an optimizer step (an in-place update) invalidates it. Only used where autograd
is off (`torch.inference_mode` / `no_grad`): neither packed op has a backward, and training keeps
`F.linear`. Costs one extra copy of the weights in memory.
HLM_CPU_PREPACK = auto (default) | hlm | onednn | 0 (off), read once when the cpu backend is built.
"""
from __future__ import annotations

import threading
import weakref

import torch
import torch.nn.functional as F

from hlm_engine.ops.cpu import ext as cpu_kernels

_ACTS = ("none", "gelu")
# The oneDNN reorder's batch-size hint only picks its blocking; 8 rows (one short query) is the case.
_ONEDNN_HINT_ROWS = 8
# Above these many token rows MKL's sgemm is compute-bound and as fast or faster: oneDNN's prepacked path
# cost the encoder's batch-64 throughput ~8%. Our kernel runs at ~93% of one core's FMA peak from 64 to 512
# rows (94-96 GFLOPS against MKL's 83-92 on AVX2 EPYC; level at 1024; bench/test_cpu_gemm.py) and fuses the
# GELU, so at one thread it keeps batches up to 512 rows (the engine's query batches: batch-16..48
# throughput +4-12%). It runs on the calling thread only, so with more torch threads it hands over where
# MKL's threaded sgemm catches up (at 32 rows, 2 threads: 0.95x).
MAX_ROWS = {"hlm": 512, "onednn": 64}
MAX_ROWS_THREADED = {"hlm": 16, "onednn": 64}

_cache: dict[int, tuple[weakref.ref, int, dict[str, torch.Tensor]]] = {}  # id(w) -> (ref, version, packed by kernel)
_lock = threading.Lock()


_HLM = cpu_kernels.EXT  # None where the extension is not built or the CPU lacks AVX2 + FMA


def available() -> list[str]:
    """The packed kernels this process can run, best first."""
    kernels = ["hlm"] if _HLM is not None else []
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        kernels.append("onednn")
    return kernels


def choose(setting: str) -> str | None:
    """The packed kernel for a setting: auto (best available) | hlm | onednn | 0 (None: plain F.linear)."""
    setting = setting.strip().lower()
    if setting in ("0", "off", "none", "mkl"):
        return None
    kernels = available()
    if setting in ("", "1", "auto"):
        return kernels[0] if kernels else None
    if setting not in MAX_ROWS:
        raise ValueError(f"HLM_CPU_PREPACK={setting!r}: choose auto, hlm, onednn or 0")
    if setting not in kernels:
        raise RuntimeError(f"HLM_CPU_PREPACK={setting}: that kernel is not available here (available: "
                           f"{', '.join(kernels) or 'none'}; 'hlm' needs the built extension and AVX2+FMA)")
    return setting


# The best packed kernel here: what `linear` uses when the caller does not say (tests, benchmarks).
DEFAULT: str | None = choose("auto")


def inference(x: torch.Tensor, w: torch.Tensor) -> bool:
    """fp32 CPU inference (autograd off): `linear` may pick a packed GEMM by row count."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and x.dim() == 2 and w.dim() == 2)


def usable(x: torch.Tensor, w: torch.Tensor, kernel: str | None) -> bool:
    """`inference`, a packed kernel chosen, and few enough rows for it."""
    return kernel is not None and inference(x, w) and 0 < x.shape[0] <= max_rows(kernel)


def max_rows(kernel: str) -> int:
    return (MAX_ROWS if torch.get_num_threads() == 1 else MAX_ROWS_THREADED)[kernel]


def _pack(w: torch.Tensor, kernel: str) -> torch.Tensor:
    w = w.detach()
    if kernel == "onednn":
        return torch.ops.mkldnn._reorder_linear_weight(w, _ONEDNN_HINT_ROWS)
    w = w.contiguous()
    n, k = w.shape
    packed = torch.empty(_HLM.packed_size(n, k), dtype=torch.float32)
    _HLM.pack(w.data_ptr(), n, k, packed.data_ptr())
    return packed


def _version(w: torch.Tensor) -> int:
    # Tensors created under torch.inference_mode (a model loaded inside it) have no version counter;
    # they cannot be updated by an optimizer, so their packed copy is kept as is.
    return -1 if w.is_inference() else w._version


def _packed(w: torch.Tensor, kernel: str) -> torch.Tensor:
    key = id(w)
    hit = _cache.get(key)
    if hit is not None and hit[0]() is w and hit[1] == _version(w) and kernel in hit[2]:
        return hit[2][kernel]
    p = _pack(w, kernel)
    with _lock:
        fresh = hit is None or hit[0]() is not w
        # One entry per weight, a packed copy per kernel (benchmarks switch kernels between calls).
        kept = {} if fresh or hit[1] != _version(w) else hit[2]
        _cache[key] = (weakref.ref(w), _version(w), kept | {kernel: p})
    if fresh:
        weakref.finalize(w, _cache.pop, key, None)
    return p


def gelu(y: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """Exact (erf) GELU; in place with our vectorized kernel on contiguous fp32 CPU inference tensors (ATen's
    erf is ~10x slower per element on AVX2 EPYC: ~8% of a batch-64 MiniLM forward), else F.gelu."""
    if (fast and _HLM is not None and not torch.is_grad_enabled() and y.device.type == "cpu"
            and y.dtype == torch.float32 and y.is_contiguous()):
        _HLM.gelu_(y.data_ptr(), y.numel())
        return y
    return F.gelu(y)


def _hlm_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, act_gelu: bool) -> torch.Tensor:
    n, k = w.shape
    x = x.contiguous()
    if b is not None:
        b = b.detach().contiguous()
        if b.dtype != torch.float32 or b.numel() != n:
            raise ValueError(f"linear: bias must be {n} fp32 values, got {b.numel()} {b.dtype}")
    y = torch.empty(x.shape[0], n, dtype=torch.float32)
    # The kernel sees raw addresses: every tensor behind them must stay referenced here until it returns.
    # (A concurrent first call may replace the cache entry, freeing a packed copy nobody else holds.)
    packed = _packed(w, "hlm")
    _HLM.gemm(x.data_ptr(), x.shape[0], k, k, packed.data_ptr(), n,
              0 if b is None else b.data_ptr(), y.data_ptr(), n, act_gelu)
    return y


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, activation: str = "none",
           kernel: str | None = DEFAULT):
    """act(x @ w^T + b); activation in {"none", "gelu"} (exact erf GELU). `kernel`: the packed GEMM for small
    batches ("hlm" | "onednn"; None: F.linear), chosen once by the caller (the cpu backend)."""
    if activation not in _ACTS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(_ACTS)}")
    if usable(x, w, kernel):
        if x.shape[1] != w.shape[1]:
            raise ValueError(f"linear: input has {x.shape[1]} features, the weight [{w.shape[0]}, {w.shape[1]}] "
                             f"expects {w.shape[1]}")
        if kernel == "hlm":  # GELU in the GEMM's epilogue
            return _hlm_linear(x, w, b, activation == "gelu")
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), _packed(w, "onednn"), b, activation, [], "none")
    out = F.linear(x, w, b)
    return gelu(out, fast=kernel is not None) if activation == "gelu" else out
