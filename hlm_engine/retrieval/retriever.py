"""`Retriever`: the online half. A query encoder (the aligned student, or the teacher) + the ad index.

    r = Retriever.load("idx/", query_encoder="minilm-aligned/" | Encoder | Engine)
    hits = r.search(["cordless drill"], k=100)     # per query: [(doc_id, score), ...] best first

Pairing is checked once, at load: the query vectors must have the index's dim and live in the space of
the teacher that encoded the ads (`hlm_engine.identity`). The query encoder is used only through the
embedding interface (`embed(texts, role="query")`, `dim`), so an `Encoder` and an `Engine` return the same.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from hlm_engine.identity import ALIGNMENT_FILE, query_space
from hlm_engine.retrieval.index.ann import AnnIndex
from hlm_engine.retrieval.index.manifest import read_index_manifest

log = logging.getLogger("hlm.retriever")


class Retriever:
    def __init__(self, index: AnnIndex, encoder, doc_texts: dict[str, str] | None = None):
        self.index, self.encoder, self.doc_texts = index, encoder, doc_texts or {}
        # embed() returns unit vectors (normalised once, in the encoder) unless the engine was told not to.
        self._unit = bool(getattr(encoder, "normalize", True))

    @classmethod
    def load(cls, index_dir: str, query_encoder, doc_texts: dict[str, str] | None = None, device: str = "cpu",
             check_teacher: bool = True) -> "Retriever":
        """Open an index and pair it with a query encoder (a name/folder is loaded as an Encoder).

        Raises ValueError when the encoder's dim or teacher space differs from the index's. An encoder whose
        teacher cannot be established (an in-memory model never saved, an Engine without `.encoder`) is paired
        with a logged warning; check_teacher=False skips the teacher check altogether (dim is always checked)."""
        dim, teacher, desc = query_space(query_encoder)  # a name is checked before its weights are loaded
        m = read_index_manifest(index_dir)
        if check_teacher and teacher is None:  # unknown is not a proven mismatch: say so, then pair
            log.warning("cannot tell which teacher space query encoder %s encodes into (no saved weights and no "
                        "%s); pairing it with an index of %r unchecked", desc, ALIGNMENT_FILE,
                        (m.get("model") or {}).get("name"))
        index = AnnIndex.load(index_dir, device=device, dim=dim, teacher_checksum=teacher if check_teacher else None)
        if isinstance(query_encoder, (str, os.PathLike)):
            from hlm_engine.encoder import Encoder
            query_encoder = Encoder.from_pretrained(os.fspath(query_encoder))
        return cls(index, query_encoder, doc_texts)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        """Queries through the embedding interface (`embed(texts, role="query")`: an Encoder or an Engine):
        the model's query instruction is applied either way."""
        return self.encoder.embed(list(queries), role="query")

    def search(self, queries: list[str], k: int = 100, batch_size: int = 256) -> list[list[tuple[str, float]]]:
        """Top-k (doc_id, score) per query. Queries go to faiss in micro-batches of `batch_size`
        (one-at-a-time search is 2-3x slower: no BLAS blocking, per-call overhead)."""
        if isinstance(queries, str):
            queries = [queries]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out: list[list[tuple[str, float]]] = []
        for s in range(0, len(queries), batch_size):
            q = self.encode_queries(queries[s: s + batch_size])
            scores, ids = self.index.search(q, k, normalized=self._unit)
            out.extend([list(zip(row, map(float, sc[: len(row)]))) for row, sc in zip(ids, scores)])
        return out

    def search_vectors(self, query_vectors: np.ndarray, k: int = 100, batch_size: int = 256):
        """Same, from precomputed query vectors [Q, d] (evaluation, benchmarks)."""
        out = []
        for s in range(0, len(query_vectors), batch_size):
            scores, ids = self.index.search(query_vectors[s: s + batch_size], k)
            out.extend([list(zip(row, map(float, sc[: len(row)]))) for row, sc in zip(ids, scores)])
        return out

    def title(self, doc_id: str) -> str:
        return self.doc_texts.get(doc_id, "")
