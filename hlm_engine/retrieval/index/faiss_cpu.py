"""faiss-cpu indexes of each kind, all by inner product, all keyed by our int64 labels.

Labels are positions in the AnnIndex id table (append-only), so `add_with_ids` / `remove_ids` map
straight back to doc ids. Flat and HNSW are wrapped in IndexIDMap2 (they have no ids of their own);
IVF indexes carry ids natively.
"""
from __future__ import annotations

import numpy as np

from hlm_engine.retrieval.index.params import IndexParams

REMOVABLE = ("flat", "ivf-flat", "ivf-pq")  # HNSW graphs cannot unlink a node; CAGRA is build-once


def _faiss():
    import faiss
    return faiss


def training_sample(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A uniform sample of rows to train k-means / PQ on (all rows when size >= N)."""
    if size >= x.shape[0]:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(x.shape[0], size, replace=False))]


def new_cpu_index(kind: str, d: int, p: IndexParams):
    """An empty (untrained) faiss index of `kind` for d-dim vectors."""
    faiss = _faiss()
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    if kind == "hnsw":
        h = faiss.IndexHNSWFlat(d, p.hnsw_m, ip)
        h.hnsw.efConstruction = p.ef_construction
        h.hnsw.efSearch = p.ef_search
        return faiss.IndexIDMap2(h)
    if kind == "ivf-flat":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, p.nlist, ip)
    if kind == "ivf-pq":
        return faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, p.nlist, p.pq_m, p.pq_nbits, ip)
    raise ValueError(f"no CPU index of kind {kind!r} (CPU kinds: flat, ivf-flat, ivf-pq, hnsw)")


def build_cpu(kind: str, x: np.ndarray, labels: np.ndarray, p: IndexParams):
    """Train (IVF/PQ) and fill a CPU index. x float32 [N, d] C-contiguous, labels int64 [N]."""
    index = new_cpu_index(kind, x.shape[1], p)
    if not index.is_trained:
        index.train(training_sample(x, p.train_size, p.seed))
    index.add_with_ids(x, labels)
    set_search_params(index, p)
    return index


def set_search_params(index, p: IndexParams) -> None:
    """nprobe (IVF) / efSearch (HNSW), looking through IDMap wrappers."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = p.nprobe
    elif isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = p.ef_search
