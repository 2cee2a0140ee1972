"""Native encoder models (our own forward, our own fused weight layout). Built by `build_model`."""
from __future__ import annotations

from hlm_engine.config import EncoderConfig


def build_model(cfg: EncoderConfig, backend: str = "torch"):
    if cfg.arch in ("bert", "mpnet"):
        from .bert import PostNormEncoder
        return PostNormEncoder(cfg, backend)
    from .qwen3 import Qwen3Encoder
    return Qwen3Encoder(cfg, backend)
