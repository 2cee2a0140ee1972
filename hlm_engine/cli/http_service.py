"""Composes the HTTP service from the layers below it: encoders, one Engine per role (serving) and the
Retriever over the index (retrieval). It lives with the entry points because serving never imports
retrieval (`tests/test_layering.py`); the server itself is `hlm_engine.serving.http_server`.
"""
from __future__ import annotations

import logging
import os

from hlm_engine.serving.http_app import Limits, Service

log = logging.getLogger("hlm_engine.serving.http")


def load_titles(corpus: str | None, id_column: str = "product_id", text_column: str = "title") -> dict[str, str]:
    """doc id -> title from a TSV (default: $HLM_DATA_DIR/homedepot/products.tsv when present)."""
    from hlm_engine.retrieval.data import data_dir, read_tsv
    if corpus is None and data_dir():
        guess = os.path.join(data_dir(), "homedepot", "products.tsv")
        corpus = guess if os.path.exists(guess) else None
    if not corpus:
        return {}
    t = read_tsv(corpus, [id_column, text_column])
    return dict(zip(t[id_column], t[text_column]))


def build_service(query_model, document_model=None, index: str | None = None, corpus: str | None = None,
                  backend: str | None = "auto", engine: dict | None = None, limits: Limits | None = None,
                  warmup: bool = True, weights: str | None = None) -> Service:
    """Load the models (names, folders or Encoders), start one Engine per role, pair the index with the query
    engine, warm up. `engine`: Engine keyword arguments shared by both roles."""
    from hlm_engine.encoder import Encoder
    from hlm_engine.serving.engine import Engine

    engines, names = {}, {}
    try:
        for role, model in (("query", query_model), ("document", document_model)):
            if model is None:
                continue
            enc = model if isinstance(model, Encoder) else Encoder.from_pretrained(
                os.fspath(model), backend=backend, weights=weights if role == "query" else None)
            engines[role] = Engine(enc, role=role, **(engine or {}))
            names[role] = _names(model, enc, role)
            folder_name = names[role][0]
            mb = engines[role].scheduler.max_batch_tokens
            if mb < enc.max_length:
                log.warning("%s model %s: max_batch_tokens=%d < its max_length %d: inputs longer than %d tokens "
                            "are refused (422)", role, folder_name, mb, enc.max_length, mb)
        retriever = None
        if index is not None:
            from hlm_engine.retrieval.retriever import Retriever
            try:
                retriever = Retriever.load(index, engines["query"], doc_texts=load_titles(corpus))
            except ValueError as e:
                raise ValueError(f"--index {index} does not pair with --query-model {names['query'][0]} "
                                 f"(space {engines['query'].space['space'] or 'unknown'}): {e}") from None
        svc = Service(engines, names, retriever, limits)
        if warmup:
            svc.warmup()
        return svc
    except BaseException:
        for eng in engines.values():
            eng.close(drain=False)
        raise


def _names(model, enc, role: str) -> list[str]:
    """The ids a model answers to: its folder's name first, then its short default name and the name given."""
    from hlm_engine.hub import DEFAULT_MODELS
    first = os.path.basename((enc.folder or "").rstrip("/")) or enc.config.name or role
    out = [first] + [k for k, src in DEFAULT_MODELS.items() if src.folder == first]
    if isinstance(model, (str, os.PathLike)):
        out.append(os.fspath(model))
    return list(dict.fromkeys(out))
