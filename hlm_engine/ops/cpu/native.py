"""The `cpu` backend's one-call forward: a whole encoder forward in C++ (csrc/native_encoder.h).

Why: at batch 1 the per-op path (~45 Python-dispatched ops per MiniLM forward, each re-checking its inputs)
costs about as much as the GEMMs themselves. `NativeEncoder` is built once from the model's config and state
dict (validated and packed at load) and runs embeddings -> layers -> pooling -> projection -> L2 norm in one
call, over the unpadded batch, on `threads` cores (its own std::thread pool: a short batch splits each GEMM's
columns over the cores, so one query streams its weights through both; from 96 token rows per thread the texts
are split instead, each thread running whole forwards on its group: no hand-off per op, ~1.2x on a corpus batch).

    native = for_model(model, backend, device, dtype, weights="fp32", threads=2)   # at load; None: per-op path
    emb = embed_ids(native, [[101, 2054, 102], [101, 102]], normalize=True, dim=None)   # np.float32 [2, d]

weights = "fp32" (default: the reference's embeddings, cos >= 0.99999) | "bf16" (weights rounded to bf16,
widened in registers, fp32 accumulation: cos >= 0.9999) | "int8" (per-output-channel symmetric scales,
min cos >= 0.99). The embedding tables stay fp32 (a forward reads only its tokens' rows); every linear (QKV,
output, FFN, projection head) is stored in the chosen format.
Why int8 keeps (nearly) exact activations: on MiniLM over 400 dev queries, int8 weights alone give min cos
0.9988 vs fp32; adding dynamic per-token int8 activations drops it to 0.9923 (7-bit activations, which
AVX2's saturating u8 x s8 products force without VNNI: 0.9855; ONNX Runtime's per-tensor dynamic
quantisation: 0.917). So int8 weights run on integer multiply-adds over activations quantised per row to int16
(a K-dependent range that cannot overflow int32 sums, 12-15 bits: cos ~1 - 2e-7 vs fp32 activations) at every
row count: ~1.5x the fp32 FMA rate on many rows, ~1.8x fp32 FMAs on int8 weights widened in registers at a query's
~7 rows (csrc/int8_gemm.h). Rows are quantised one by one and integer sums are exact, so a text's int8
embedding is the same bits at batch 1 and inside any batch.

The native encoder is a snapshot of the weights at build time (packed copies; the embedding tables are
borrowed): rebuild it after training. The PyTorch model stays the oracle and the fallback: where the
extension is not built or the CPU lacks AVX2 + FMA, `status()` says why and callers keep the per-op path.
HLM_CPU_NATIVE = auto (default) | 0 (the cpu backend's per-op path: side-by-side benchmarks).
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from hlm_engine.ops.cpu import ext

log = logging.getLogger(__name__)
WEIGHTS = ("fp32", "bf16", "int8")
_logged: set[str] = set()


def status() -> tuple[bool, str]:
    """(usable, reason): the extension is built with the native forward and the CPU has AVX2 + FMA."""
    if ext.EXT is None:
        return False, "the native forward needs the C++ extension and a CPU with AVX2 + FMA: " + ext.WHY
    if not hasattr(ext.EXT, "NativeEncoder"):
        return False, "the built hlm_engine._cpu_kernels predates the native forward: rebuild it (pip install -e .)"
    return True, "native C++ forward"


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights format {weights!r}; choose one of {', '.join(WEIGHTS)}")
    return weights


def state_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's fp32 state dict as C-contiguous numpy arrays (views of the tensors where they already are
    fp32 and contiguous: the native encoder borrows the embedding tables instead of copying them)."""
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
            t = t.to(device="cpu", dtype=torch.float32).contiguous()
        out[name] = t.numpy()
    return out


def build(model: torch.nn.Module, weights: str = "fp32", threads: int = 1):
    """A NativeEncoder for `model` (a PostNormEncoder / Qwen3Encoder: `.cfg` + state dict). Raises
    RuntimeError where the native forward cannot run here (status()), ValueError on a bad weights format,
    thread count or a tensor whose shape disagrees with the config (named)."""
    check_weights(weights)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    ok, why = status()
    if not ok:
        raise RuntimeError(why)
    return ext.EXT.NativeEncoder(model.cfg.to_dict(), state_arrays(model), weights, threads)


def embed_ids(native, ids_list: list[list[int]], normalize: bool = True, dim: int | None = None) -> np.ndarray:
    """Token id lists (one packed batch) -> np.float32 [B, dim or embed_dim], pooled, projected, normalised.
    Bad ids, empty texts or dim are named in the ValueError."""
    if not ids_list:
        raise ValueError("cannot encode an empty batch")
    return native.encode_ids(ids_list, dim, normalize)


def for_model(model: torch.nn.Module, backend: str, device, dtype, weights: str = "fp32", threads: int = 1):
    """The native forward an encoder gets at load, decided once (None: the per-op path of its backend).

    backend "cpu", CPU tensors, fp32 and the extension here -> a NativeEncoder of `weights`. Anything else
    keeps the per-op path: "torch" is the pure reference by definition, triton/CUDA have their own. A cpu
    model that cannot have it (no extension, no AVX2 + FMA, or HLM_CPU_NATIVE=0) logs why once, then runs
    the per-op cpu path, the same embeddings. bf16 / int8 weights exist only here, so asking for them where
    the native forward cannot run raises instead of silently serving fp32."""
    check_weights(weights)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if backend != "cpu" or dev.type != "cpu" or dtype not in (None, torch.float32):
        if weights != "fp32":
            raise ValueError(f"weights={weights!r} needs the native CPU forward: backend 'cpu' on the CPU in fp32 "
                             f"(got backend {backend!r}, device {dev}, dtype {dtype})")
        return None
    ok, why = status()
    if ok and os.environ.get("HLM_CPU_NATIVE", "auto").strip().lower() in ("0", "off", "none"):
        ok, why = False, "HLM_CPU_NATIVE=0"
    if not ok:
        if weights != "fp32":
            raise RuntimeError(f"weights={weights!r}: {why}")
        if why not in _logged:
            _logged.add(why)
            log.warning("cpu backend: the per-op forward (no native forward: %s)", why)
        return None
    return build(model, weights, threads)
