"""Cached encodings (corpora, query logs, teacher targets) and the dev-split quality check of a phase.

Encodings go through `hlm_engine.retrieval.corpus.encode_corpus` (sharded, resumable, pinned to the model's weight
checksum), so an interrupted teacher-target pass resumes shard by shard and a finished one is reused.
Retrieval quality: exact top-100 by inner product against a document matrix, scored by `hlm_engine.retrieval.eval`.
"""
from __future__ import annotations

import numpy as np

from hlm_engine.retrieval.corpus import encode_corpus, load_embeddings
from hlm_engine.retrieval.eval import HOMEDEPOT_THRESHOLD, compute_metrics
from hlm_engine.retrieval.index.exact import exact_topk


def cached_encode(encoder, texts: list[str], out_dir: str, ids: list[str] | None = None, batch_size: int = 64,
                  shard_size: int = 4096, show_progress: bool = True) -> np.ndarray:
    """float32 [n, d] embeddings of `texts`, computed once into `out_dir` (resumable) and then reused.
    Texts are keyed by position ("t{i}") unless ids are given."""
    ids = ids if ids is not None else [f"t{i}" for i in range(len(texts))]
    encode_corpus(encoder, ids, texts, out_dir, shard_size=shard_size, batch_size=batch_size,
                  show_progress=show_progress)
    got, emb = load_embeddings(out_dir)
    if list(got) != list(ids):
        raise ValueError(f"{out_dir}: cached ids differ from the requested ones (stale cache? delete it)")
    return np.asarray(emb, dtype=np.float32)


def rank_run(query_emb: np.ndarray, doc_emb: np.ndarray, query_ids: list[str], doc_ids: list[str],
             k: int = 100) -> dict[str, list[str]]:
    _, idx = exact_topk(query_emb, doc_emb, k)
    return {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, idx)}


def retrieval_quality(query_emb: np.ndarray, doc_emb: np.ndarray, query_ids: list[str], doc_ids: list[str],
                      qrels: dict, threshold: float = HOMEDEPOT_THRESHOLD) -> dict[str, float]:
    """compute_metrics of the exact top-100 ranking (keys R@10, R@100, nDCG@10, MRR@10, ...)."""
    if query_emb.shape[1] != doc_emb.shape[1]:
        raise ValueError(f"query vectors are {query_emb.shape[1]}-d but documents are {doc_emb.shape[1]}-d "
                         f"(a student must be aligned into the document encoder's space)")
    run = rank_run(query_emb, doc_emb, query_ids, doc_ids, 100)
    return compute_metrics(run, qrels, ks=(10, 100), threshold=threshold)
