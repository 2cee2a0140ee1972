"""Training data: (query, positive product) pairs from graded qrels, text identities, corpus slices.

A pair is (query i, product j) with relevance ≥ `threshold` (Home Depot: mean of ≥3 raters on 1–3;
default 2.67 = at least two of three raters said "exact match"). Products are referred to by their
row in the corpus; `doc_keys` give each row a text identity so duplicate titles mask each other.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hlm_engine.retrieval.data import RetrievalSet, load_homedepot

DEFAULT_THRESHOLD = 2.67


@dataclass
class Pairs:
    query_texts: list[str]          # unique training queries
    query_keys: np.ndarray          # [Q] int64 text identity of each query
    pair_query: np.ndarray          # [P] int64 index into query_texts
    pair_doc: np.ndarray            # [P] int64 row of the positive in the corpus
    judged: list[dict[int, float]]  # per query: corpus row -> relevance (all judged products)

    def __len__(self) -> int:
        return len(self.pair_query)


def text_keys(texts: list[str]) -> np.ndarray:
    """[n] int64: equal (case- and space-normalised) texts get equal keys."""
    seen: dict[str, int] = {}
    return np.array([seen.setdefault(" ".join(t.lower().split()), len(seen)) for t in texts], dtype=np.int64)


def build_pairs(rs: RetrievalSet, threshold: float = DEFAULT_THRESHOLD) -> Pairs:
    """Positive pairs of a split; products absent from the corpus are skipped; none left is an error."""
    row = {d: i for i, d in enumerate(rs.doc_ids)}
    q_texts, judged, pq, pd = [], [], [], []
    for qid, text in zip(rs.query_ids, rs.queries):
        rels = {row[d]: r for d, r in rs.qrels.get(qid, {}).items() if d in row}
        pos = sorted(j for j, r in rels.items() if r >= threshold)
        if not pos:
            continue
        qi = len(q_texts)
        q_texts.append(text)
        judged.append(rels)
        pq.extend([qi] * len(pos))
        pd.extend(pos)
    if not pq:
        raise ValueError(f"no training pairs: no query has a judged product in the corpus with relevance >= "
                         f"{threshold} ({len(rs.queries)} queries, {len(rs.doc_ids)} products)")
    return Pairs(q_texts, text_keys(q_texts), np.array(pq, dtype=np.int64), np.array(pd, dtype=np.int64), judged)


def restrict(rs: RetrievalSet, rows: np.ndarray) -> RetrievalSet:
    """The same queries and qrels over a corpus subset (qrels keep only products still present)."""
    ids = [rs.doc_ids[i] for i in rows]
    keep = set(ids)
    qrels = {q: {d: r for d, r in rel.items() if d in keep} for q, rel in rs.qrels.items()}
    return RetrievalSet(ids, [rs.doc_texts[i] for i in rows], rs.query_ids, rs.queries, qrels)


def load_split(split: str, data_dir: str | None, rows: np.ndarray | None = None) -> RetrievalSet:
    rs = load_homedepot(split, data_dir)
    if not rs.doc_ids:
        raise ValueError(f"{split}: the product corpus is empty")
    if not rs.queries:
        raise ValueError(f"{split}: no queries")
    return restrict(rs, rows) if rows is not None else rs


@dataclass
class ContrastiveBatch:
    """One global InfoNCE batch, as rows: queries (into Pairs.query_texts), a document pool (corpus rows:
    the B positives first, then each query's K hard negatives, then any shared negatives)."""
    query_rows: np.ndarray   # [B]
    pool_rows: np.ndarray    # [N]
    pos_index: np.ndarray    # [B] = arange(B)
    doc_keys: np.ndarray     # [N] text identities
    query_keys: np.ndarray   # [B]
    known_pos: np.ndarray    # [B, N] bool: pool doc judged >= threshold for this query


def contrastive_batch(pairs: Pairs, negatives: np.ndarray, idx: np.ndarray, corpus_keys: np.ndarray,
                      threshold: float, shared_rows: np.ndarray | None = None) -> ContrastiveBatch:
    qr = pairs.pair_query[idx]
    parts = [pairs.pair_doc[idx], negatives[qr].reshape(-1)]
    if shared_rows is not None:
        parts.append(np.asarray(shared_rows, dtype=np.int64))
    pool = np.concatenate(parts)
    known = np.array([[pairs.judged[q].get(int(j), 0.0) >= threshold for j in pool] for q in qr], dtype=bool)
    return ContrastiveBatch(qr, pool, np.arange(len(idx)), corpus_keys[pool], pairs.query_keys[qr], known)
