"""`AnnIndex`: a faiss index + the doc-id table it answers with, saved atomically with a manifest.

    index = build_index(vecs, ids, kind="auto")          # flat | ivf-flat | ivf-pq | hnsw | cagra
    scores, doc_ids = index.search(query_vecs, k=100)    # float32 [Q, k], list[list[str]]
    index.add(new_vecs, new_ids); index.remove(["123"]); index.save("idx/"); AnnIndex.load("idx/")

Vectors are L2-normalised on the way in (docs and queries), so inner product = cosine similarity.
Internally each doc has an int64 label = its position in `self._ids` (append-only; a removed doc leaves
None behind), which is what faiss stores and returns.
"""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np

from hlm_engine.retrieval.index import faiss_cpu, faiss_gpu
from hlm_engine.retrieval.index.manifest import FORMAT, METRIC, check_compatible, read_index_manifest
from hlm_engine.retrieval.index.params import KINDS, IndexParams, default_kind, resolve_params
from hlm_engine.io import atomic_dir, read_json

log = logging.getLogger("hlm.index")


def _as_matrix(x, dim: int | None = None, normalize: bool = True) -> np.ndarray:
    """float32 C-contiguous [n, d], L2-normalised rows (faiss wants exactly this)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"vectors must be [n, d], got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"vectors are {x.shape[1]}-d, the index holds {dim}-d vectors")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf")
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(x, dtype=np.float32)


class AnnIndex:
    def __init__(self, index, kind: str, dim: int, ids: list, params: IndexParams, device: str = "cpu",
                 model: dict | None = None, normalize: bool = True, extra: dict | None = None):
        self.index, self.kind, self.dim, self.params = index, kind, int(dim), params
        self.device, self.model, self.normalize = device, model, normalize
        self.extra = dict(extra or {})
        self._ids: list[str | None] = list(ids)
        self._label = {d: i for i, d in enumerate(self._ids) if d is not None}

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries, k: int = 100, normalized: bool = False) -> tuple[np.ndarray, list[list[str]]]:
        """queries [Q, d] -> (scores float32 [Q, k], doc ids per query, best first).

        `normalized=True`: the caller's vectors are unit length already (an encoder's `embed` output), so
        they are not normalised a second time. Fewer than k hits (tiny index, IVF lists too sparse) leave
        -inf scores and shorter id lists."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_matrix(queries, self.dim, self.normalize and not normalized)
        if len(self) == 0:
            return np.full((q.shape[0], k), -np.inf, np.float32), [[] for _ in range(q.shape[0])]
        if self.device == "cuda":
            sp = faiss_gpu.gpu_search_params(self.kind, self.params, k)
            scores, labels = self.index.search(q, k, params=sp) if sp is not None else self.index.search(q, k)
        else:
            scores, labels = self.index.search(q, k)
        scores = np.where(labels >= 0, scores, -np.inf).astype(np.float32)
        ids = self._ids
        return scores, [[ids[j] for j in row if j >= 0] for row in labels]

    def doc_ids(self) -> list[str]:
        """Live doc ids, in label order."""
        return [d for d in self._ids if d is not None]

    # ------------------------------------------------------------------ updates
    def add(self, vectors, ids: list[str]) -> None:
        """Append new docs without rebuilding (IVF uses the trained centroids; HNSW links them in)."""
        x = _as_matrix(vectors, self.dim, self.normalize)
        ids = [str(i) for i in ids]
        if len(ids) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} vectors but {len(ids)} ids")
        clash = [i for i in ids if i in self._label]
        if clash or len(set(ids)) != len(ids):
            raise ValueError(f"doc id(s) already in the index or repeated: {(clash or ids)[:5]} (remove them first)")
        if self.kind == "cagra":
            raise ValueError("a CAGRA index cannot grow incrementally: rebuild it, or use hnsw / ivf-flat")
        start = len(self._ids)
        labels = np.arange(start, start + len(ids), dtype=np.int64)
        self.index.add_with_ids(x, labels)
        self._ids.extend(ids)
        self._label.update({d: start + j for j, d in enumerate(ids)})

    def remove(self, ids: list[str]) -> int:
        """Delete docs by id where the structure allows it (flat, IVF); returns how many were removed."""
        if self.kind not in faiss_cpu.REMOVABLE:
            raise ValueError(f"a {self.kind} index cannot delete entries (graph links would dangle): "
                             f"rebuild without them, or use one of {', '.join(faiss_cpu.REMOVABLE)}")
        missing = [i for i in ids if str(i) not in self._label]
        if missing:
            raise KeyError(f"doc id(s) not in the index: {missing[:5]}")
        import faiss
        labels = np.array([self._label.pop(str(i)) for i in ids], dtype=np.int64)
        n = int(self.index.remove_ids(faiss.IDSelectorBatch(labels)))
        for j in labels:
            self._ids[j] = None
        return n

    # ------------------------------------------------------------------ persistence
    def _cpu_index(self):
        return faiss_gpu.to_cpu(self.index) if self.device == "cuda" else self.index

    def nbytes(self) -> int:
        """Serialized size of the faiss index (vectors/codes + structure), the memory it needs to serve."""
        import faiss
        return int(faiss.serialize_index(self._cpu_index()).size)

    def manifest(self) -> dict:
        import faiss
        return {"format": FORMAT, "kind": self.kind, "metric": METRIC, "dim": self.dim, "count": len(self),
                "normalize": self.normalize, "params": self.params.to_dict(), "model": self.model,
                "built_on": self.device, "faiss_version": faiss.__version__, **self.extra}

    def save(self, out_dir: str) -> None:
        """Atomically write index.faiss + ids.json + manifest.json (readers never see a half-written index)."""
        import faiss
        with atomic_dir(out_dir) as tmp:
            faiss.write_index(self._cpu_index(), os.path.join(tmp, "index.faiss"))
            with open(os.path.join(tmp, "ids.json"), "w") as f:
                json.dump(self._ids, f)
            with open(os.path.join(tmp, "manifest.json"), "w") as f:
                json.dump(dict(self.manifest(), saved=time.strftime("%Y-%m-%dT%H:%M:%S%z")), f, indent=2)

    @classmethod
    def load(cls, index_dir: str, device: str = "cpu", dim: int | None = None,
             teacher_checksum: str | None = None) -> "AnnIndex":
        """Read an index folder; refuses one whose dim / teacher does not match what will query it."""
        import faiss
        m = read_index_manifest(index_dir)
        m["_dir"] = index_dir
        check_compatible(m, dim=dim, teacher_checksum=teacher_checksum)
        index = faiss.read_index(os.path.join(index_dir, "index.faiss"))
        ids = read_json(os.path.join(index_dir, "ids.json"))
        if index.d != m["dim"] or index.ntotal != m["count"]:
            raise ValueError(f"{index_dir}: index.faiss holds {index.ntotal} x {index.d}, manifest says "
                             f"{m['count']} x {m['dim']} (folder tampered with or mixed)")
        params = IndexParams.from_dict(m["params"])
        dev = faiss_gpu.resolve_device(device, m["kind"])
        faiss_cpu.set_search_params(index, params)
        if dev == "cuda":
            index = faiss_gpu.checked_cpu_to_gpu(index)
        extra = {k: v for k, v in m.items() if k in ("source",)}
        return cls(index, m["kind"], m["dim"], ids, params, dev, m.get("model"), m.get("normalize", True), extra)


def build_index(embeddings, ids: list[str], kind: str = "auto", device: str = "auto", model: dict | None = None,
                normalize: bool = True, params: IndexParams | None = None, **overrides) -> AnnIndex:
    """embeddings [N, d] + doc ids -> AnnIndex. `overrides`: IndexParams fields (nlist=, nprobe=, ...)."""
    x = _as_matrix(embeddings, None, normalize)
    ids = [str(i) for i in ids]
    if len(ids) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} vectors but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError("doc ids must be unique")
    if x.shape[0] == 0:
        raise ValueError("cannot build an index over 0 vectors")
    n, d = x.shape
    if kind == "auto":
        kind = default_kind(n)
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose from auto, {', '.join(KINDS)}")
    p = resolve_params(n, d, params, **overrides)
    dev = faiss_gpu.resolve_device(device, kind)
    if kind == "cagra" and dev == "cpu":
        if device == "cpu":
            raise ValueError("CAGRA is a GPU index: use device='auto'/'cuda' on a GPU, or kind='hnsw' on CPU")
        log.info("no GPU for CAGRA: falling back to its CPU counterpart, an HNSW graph")
        kind = "hnsw"
    labels = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    index = faiss_gpu.build_gpu(kind, x, labels, p) if dev == "cuda" else faiss_cpu.build_cpu(kind, x, labels, p)
    log.info("built %s index over %d x %d on %s in %.1f s", kind, n, d, dev, time.perf_counter() - t0)
    return AnnIndex(index, kind, d, ids, p, dev, model, normalize)


def build_index_from_embeddings_dir(emb_dir: str, kind: str = "auto", out_dir: str | None = None,
                                    device: str = "auto", **overrides) -> AnnIndex:
    """Shards written by encode_corpus -> AnnIndex (saved to out_dir when given), pinned to their teacher."""
    from hlm_engine.retrieval.corpus import load_embeddings, read_manifest
    em = read_manifest(emb_dir)
    ids, vecs = load_embeddings(emb_dir)
    index = build_index(vecs, ids, kind=kind, device=device, model=em["model"], normalize=True, **overrides)
    index.extra["source"] = {"corpus_checksum": em["corpus_checksum"], "embeddings_normalized": em["normalize"],
                             "source": em.get("source")}
    if out_dir:
        index.save(out_dir)
    return index
