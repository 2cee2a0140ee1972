"""Hard-negative mining from a dense index: ranks ~[lo, hi) of each query, skipping judged positives.

Ranks below `lo` are skipped because the unjudged top hits of a pooled-judgment set (about 6 judged
products per query here) are often unlabeled positives; ranks past `hi` are too easy to teach much
(the usual ANCE / Qwen3-Embedding practice). Exact inner-product search: the corpora are ~54k × 768.
"""
from __future__ import annotations

import numpy as np

from hlm_engine.retrieval.index.exact import exact_topk


def mine_hard_negatives(query_emb: np.ndarray, doc_emb: np.ndarray, k: int, skip: list[set[int]],
                        lo: int = 10, hi: int = 100, seed: int = 0, doc_keys: np.ndarray | None = None,
                        skip_keys: list[set[int]] | None = None) -> np.ndarray:
    """[Q, k] int64 corpus rows: k negatives per query drawn (seeded) from ranks [lo, hi) of the query's
    ranking, excluding rows in skip[i] (judged relevant) and rows whose text key is in skip_keys[i]
    (titles equal to a positive's). If too few remain, deeper ranks and then random rows fill in."""
    Q, N = len(query_emb), len(doc_emb)
    if not 0 <= lo < hi:
        raise ValueError(f"need 0 <= lo < hi, got lo={lo} hi={hi}")
    if len(skip) != Q:
        raise ValueError(f"skip has {len(skip)} entries for {Q} queries")
    if N - max((len(s) for s in skip), default=0) < k:
        raise ValueError(f"corpus of {N} products is too small for {k} negatives per query")
    depth = min(N, max(hi, lo + 4 * k))
    _, ranked = exact_topk(query_emb, doc_emb, depth)
    rng = np.random.default_rng(seed)
    out = np.empty((Q, k), dtype=np.int64)
    for i in range(Q):
        bad = skip[i]
        bad_keys = skip_keys[i] if skip_keys is not None else ()

        def ok(j):
            return j not in bad and (doc_keys is None or doc_keys[j] not in bad_keys)
        window = [j for j in ranked[i, lo:hi] if ok(j)]
        if len(window) >= k:
            out[i] = rng.choice(window, size=k, replace=False)
            continue
        chosen = window + [j for j in ranked[i, hi:] if ok(j)][: k - len(window)]
        while len(chosen) < k:  # tiny corpora only
            j = int(rng.integers(N))
            if ok(j) and j not in chosen:
                chosen.append(j)
        out[i] = chosen
    return out
