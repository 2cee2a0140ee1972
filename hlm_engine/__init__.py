"""hlm-engine: fast inference and training for compact asymmetric text-embedding retrievers
(the HARNESS-LM recipe: large teacher encodes the ads offline, a small aligned student encodes queries online).
"""
from __future__ import annotations

__version__ = "0.1.0"

from hlm_engine.config import EncoderConfig, preset  # noqa: E402
from hlm_engine.encoder import Encoder  # noqa: E402

_LAZY = {"Engine": "hlm_engine.serving.engine", "Retriever": "hlm_engine.retrieval.retriever"}


def __getattr__(name):
    # Engine and Retriever pull in the scheduler / faiss; import them only when asked for.
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hlm_engine' has no attribute {name!r}")


__all__ = ["Encoder", "EncoderConfig", "preset", "Engine", "Retriever", "__version__"]
