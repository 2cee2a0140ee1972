"""Serve queries through the engine and the ANN index: quality of what is actually served, plus latency and
throughput of the online half (student encode via dynamic batching + index search)."""
from __future__ import annotations

import time

import numpy as np

from hlm_engine.serving.engine import Engine
from hlm_engine.retrieval.eval import compute_metrics
from hlm_engine.retrieval.retriever import Retriever


def serve_queries(index_dir: str, encoder, query_ids: list[str], queries: list[str], qrels: dict,
                  threshold: float, latency_queries: int = 200) -> dict:
    """Dev queries through Engine(encoder) + Retriever: metrics of the served ranking, throughput with all
    queries in flight at once, and batch-1 latency percentiles (one request at a time, encode + search)."""
    with Engine(encoder, max_batch_size=64, max_delay_us=2000) as eng:
        r = Retriever.load(index_dir, eng)
        eng.encode(queries[:8])  # warm-up
        t0 = time.perf_counter()
        futs = [eng.submit(q) for q in queries]
        vecs = np.stack([f.result() for f in futs])
        enc_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        hits = r.search_vectors(vecs, k=100)
        search_s = time.perf_counter() - t1
        lat = []
        for q in queries[:latency_queries]:
            t = time.perf_counter()
            r.search_vectors(eng.submit(q).result()[None, :], k=100)
            lat.append((time.perf_counter() - t) * 1e3)
    run = {qid: [d for d, _ in h] for qid, h in zip(query_ids, hits)}
    m = compute_metrics(run, qrels, ks=(10, 100), threshold=threshold)
    return {"metrics": m, "index_kind": r.index.kind, "queries": len(queries),
            "throughput_qps": len(queries) / (enc_s + search_s), "encode_qps": len(queries) / enc_s,
            "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99))}
