"""fp32 CPU inference GEMMs on weights reordered once into oneDNN's blocked layout.

Why: online query encoding is batch 1 — a query is ~8 tokens, so every linear is an M≈8 GEMM that
streams the whole weight matrix once. MKL's sgemm on the row-major [N, K] nn.Linear layout reaches only
~5 GB/s of weight traffic at that shape on AVX2 EPYC; oneDNN's brgemm on weights pre-reordered for the
CPU's vector width is ~1.2x faster end to end on one thread and ~1.4x on two (bench/test_encoder.py), and
fuses the exact-erf GELU of BERT's FFN into the GEMM. Big batches (> _MAX_ROWS token rows) stay on MKL. The math is the same fp32 dot product (only the
summation order differs: |Δ| ~ 1e-6).

The reorder happens once per weight and is cached beside it (keyed by the tensor's identity, dropped when
the weight is freed; not stored on the tensor, which would break pickling the module), tagged with its
version counter, so an optimizer step (an in-place update) invalidates it. Only used where autograd is off
(`torch.inference_mode` / `no_grad`): the packed op has no backward, and training keeps `F.linear`.
Costs one extra copy of the weights in memory. HLM_CPU_PREPACK=0 turns it off.
"""
from __future__ import annotations

import os
import threading
import weakref

import torch
import torch.nn.functional as F

_cache: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}   # id(weight) -> (ref, version, packed)
_lock = threading.Lock()
_ACTS = {"none": "none", "gelu": "gelu"}
# The batch-size hint of the reorder only picks the blocking; 8 rows (one short query) is the case to serve.
_HINT_ROWS = 8
# Above this many token rows MKL's sgemm is compute-bound and as fast or faster (the encoder's batch-64
# throughput dropped ~8% with every GEMM prepacked), so the prepacked path serves small batches only.
_MAX_ROWS = 64


def _available() -> bool:
    return (os.environ.get("HLM_CPU_PREPACK", "1") != "0" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


_ENABLED = _available()


def usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (_ENABLED and not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and x.dim() == 2 and 0 < x.shape[0] <= _MAX_ROWS)


def _packed(w: torch.Tensor) -> torch.Tensor:
    key = id(w)
    hit = _cache.get(key)
    if hit is not None and hit[0]() is w and hit[1] == w._version:
        return hit[2]
    p = torch.ops.mkldnn._reorder_linear_weight(w.detach(), _HINT_ROWS)
    with _lock:
        fresh = hit is None or hit[0]() is not w
        _cache[key] = (weakref.ref(w), w._version, p)
    if fresh:
        weakref.finalize(w, _cache.pop, key, None)
    return p


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, activation: str = "none"):
    """act(x @ w^T + b); activation in {"none", "gelu"} (exact erf GELU)."""
    if activation not in _ACTS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(_ACTS)}")
    if usable(x, w):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), _packed(w), b, _ACTS[activation], [], "none")
    out = F.linear(x, w, b)
    return F.gelu(out) if activation == "gelu" else out
