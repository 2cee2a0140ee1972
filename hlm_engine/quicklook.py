"""`python -m hlm_engine.quicklook` (`make quicklook`): a two-minute look at the two default models, untrained.

The runtime-only smoke run (the recipe itself, teacher -> align -> refine -> serve, is `make demo` on a slice
and `make reproduce` on the whole catalogue): it loads the student (all-MiniLM-L6-v2, the online query
encoder) and the teacher (all-mpnet-base-v2, the offline ad encoder), encodes the ad titles and the dev
queries with both, prints throughput and batch-1 latency, shows the nearest ads for a few queries (exact
inner-product search), and a quick Recall@10 for each model on its own embeddings (off the shelf, the
student is not aligned to the teacher, so each model searches its own space).

Data: $HLM_DATA_DIR (or --data-dir) when set, else the small sample set shipped in the package. With real
data the default corpus is a subset of --num-docs products (half judged relevant to some dev query, half
random), which keeps the run to a few minutes on 2 cores but makes recall optimistic; --full encodes all
54,667 titles (the teacher needs ~20+ minutes for that on 2 CPU cores).

    Recall@10(q) = |top10(q) ∩ rel(q)| / |rel(q)|,  rel(q) = encoded products with grade >= --rel-threshold
"""
from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np
import torch

from hlm_engine.retrieval.data import data_dir, load_homedepot
from hlm_engine.encoder import Encoder
from hlm_engine.retrieval.eval import compute_metrics
from hlm_engine.retrieval.index.exact import exact_topk


def pick_corpus(ds, num_docs: int | None, threshold: float, seed: int = 0) -> list[int]:
    """Indices of the products to encode: all (num_docs=None), else half relevant to some dev query, half random.

    Half-and-half keeps every dev query's chance of having its relevant product in the subset while the
    other half are distractors; both halves are seeded samples, so the subset is deterministic."""
    n = len(ds.doc_ids)
    if num_docs is None or num_docs >= n:
        return list(range(n))
    rng = random.Random(seed)
    pos = {d: i for i, d in enumerate(ds.doc_ids)}
    rel = sorted({pos[d] for q in ds.qrels.values() for d, g in q.items() if g >= threshold and d in pos})
    rel = rng.sample(rel, min(len(rel), num_docs // 2))
    taken = set(rel)
    others = [i for i in range(n) if i not in taken]
    return sorted(rel + rng.sample(others, min(len(others), num_docs - len(rel))))


def recall_at_k(top: np.ndarray, query_ids, doc_ids, qrels, threshold: float, k: int = 10) -> tuple[float, int]:
    """Recall@k (hlm_engine.retrieval.eval) counting only the encoded products as relevant candidates (the demo
    searches a corpus slice); returns (recall, number of queries with a relevant encoded product)."""
    encoded = set(doc_ids)
    sub = {q: {d: g for d, g in qrels.get(q, {}).items() if d in encoded} for q in query_ids}
    run = {q: [doc_ids[j] for j in top[i, :k]] for i, q in enumerate(query_ids)}
    m = compute_metrics(run, sub, ks=(k,), threshold=threshold)
    return m[f"R@{k}"], int(m["queries"])


def batch1_latency_ms(enc: Encoder, texts: list[str]) -> tuple[float, float]:
    """p50, p99 of encode([text]) wall time in ms (one warm-up call first)."""
    enc.encode(texts[:1], batch_size=1)
    ts = []
    for t in texts:
        t0 = time.perf_counter()
        enc.encode([t], batch_size=1)
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 99))


def timed_encode(enc: Encoder, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    emb = enc.encode(texts, batch_size=batch_size)
    return emb, len(texts) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hlm_engine.quicklook", description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None, help="real data folder (default: $HLM_DATA_DIR, else the sample set)")
    ap.add_argument("--student", default="minilm")
    ap.add_argument("--teacher", default="mpnet")
    ap.add_argument("--num-docs", type=int, default=1000, help="products to encode with real data (default 1000)")
    ap.add_argument("--full", action="store_true", help="encode every product (slow on CPU: ~20+ min for the teacher)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--latency-queries", type=int, default=200, help="queries timed one at a time (student)")
    ap.add_argument("--rel-threshold", type=float, default=2.67, help="grade counted as relevant (1..3 scale)")
    ap.add_argument("--show", type=int, default=3,
                    help="queries whose nearest ads are printed (ones with a relevant encoded product)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    root = data_dir(a.data_dir)
    ds = load_homedepot("dev", root)
    idx = pick_corpus(ds, None if (a.full or root is None) else a.num_docs, a.rel_threshold)
    doc_ids = [ds.doc_ids[i] for i in idx]
    docs = [ds.doc_texts[i] for i in idx]
    queries, query_ids = ds.queries, ds.query_ids
    src = f"real data at {root}" if root else "the sample set shipped in the package (set HLM_DATA_DIR for real data)"
    print(f"data: {src}")
    print(f"corpus: {len(docs)} of {len(ds.doc_ids)} product titles"
          + ("" if len(docs) == len(ds.doc_ids) else " (half judged relevant to a dev query, half random: "
                                                       "recall is optimistic, use --full)")
          + f"; {len(queries)} dev queries; torch threads {torch.get_num_threads()}")

    models, results = {"student": a.student, "teacher": a.teacher}, {}
    for role, name in models.items():
        t0 = time.perf_counter()
        enc = Encoder.from_pretrained(name, backend="torch")
        load_s = time.perf_counter() - t0
        d_emb, docs_per_s = timed_encode(enc, docs, a.batch_size)
        q_emb, q_per_s = timed_encode(enc, queries, a.batch_size)
        n_lat = a.latency_queries if role == "student" else max(1, a.latency_queries // 4)
        p50, p99 = batch1_latency_ms(enc, queries[:n_lat])
        _, top = exact_topk(q_emb, d_emb, k=10)
        rec, n_judged = recall_at_k(top, query_ids, doc_ids, ds.qrels, a.rel_threshold)
        results[role] = dict(name=name, dim=enc.dim, top=top)
        print(f"\n{role}: {name} ({enc.config.arch}, {enc.config.num_layers} layers, {enc.dim}-d), loaded in "
              f"{load_s:.1f}s\n  docs    {docs_per_s:8.0f} /s  (batch {a.batch_size})\n  queries {q_per_s:8.0f} /s"
              f"  (batch {a.batch_size})\n  batch-1 latency p50 {p50:.1f} ms, p99 {p99:.1f} ms over {n_lat} queries"
              f"\n  Recall@10 {rec:.3f} over {n_judged} dev queries with a relevant (grade >= {a.rel_threshold}) "
              f"encoded product")

    encoded = set(doc_ids)
    shown = [qi for qi, qid in enumerate(query_ids)  # queries with a relevant product in the encoded corpus
             if any(g >= a.rel_threshold and d in encoded for d, g in ds.qrels.get(qid, {}).items())][:a.show]
    for qi in shown:
        rel = ds.qrels.get(query_ids[qi], {})
        print(f"\nquery: {queries[qi]!r}")
        for role in models:
            print(f"  {role}:")
            for j in results[role]["top"][qi, :3]:
                g = rel.get(doc_ids[j])
                print(f"    {'  -' if g is None else f'{g:4.2f}'}  {docs[j]}")
    print("\n(grade: judged relevance 1..3, '-' = unjudged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
