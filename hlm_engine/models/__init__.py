"""Native encoder models over packed (cu_seqlens) batches: BERT / MPNet (`bert.py`), Qwen3 (`qwen3.py`).

Models call `hlm_engine.ops` only (never kernels or the C++ extension directly); the backend is chosen once,
when `build_model` builds them, and carried by the model. `resolve` (a model name or folder -> folder) is
re-exported from `hlm_engine.hub`, the download cache, where it lives.
"""
from __future__ import annotations

from hlm_engine.config import EncoderConfig
from hlm_engine.hub import resolve  # noqa: F401  (public: hlm_engine.models.resolve)


def build_model(cfg: EncoderConfig, backend: str = "torch"):
    if cfg.arch in ("bert", "mpnet"):
        from .bert import PostNormEncoder
        return PostNormEncoder(cfg, backend)
    from .qwen3 import Qwen3Encoder
    return Qwen3Encoder(cfg, backend)
