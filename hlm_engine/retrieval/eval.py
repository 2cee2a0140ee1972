"""Retrieval metrics with graded qrels: P@K, R@K, nDCG@10, MRR@10, teacher-student overlap, recovery.

    m = compute_metrics(run, qrels, ks=(10, 100), threshold=2.67)
    # run: query_id -> ranked doc ids; qrels: query_id -> {doc_id: relevance}

Definitions (per query, then averaged over the evaluated queries):
    rel(d)     = 1 if qrels[q][d] >= threshold else 0      (unjudged docs count as not relevant)
    P@K        = sum_{i<K} rel(d_i) / K
    R@K        = sum_{i<K} rel(d_i) / #{d : rel(d) = 1}
    MRR@K      = 1 / rank of the first relevant doc in the top K (0 if none)
    nDCG@K     = DCG@K / IDCG@K, DCG@K = sum_{i<K} g(d_i) / log2(i + 2)    (Järvelin & Kekäläinen 2002:
                 linear gains), g(d) = relevance - 1 on the 1-3 scale (1.0 "irrelevant" -> 0, 3.0 -> 2);
                 IDCG from the query's judged docs sorted by gain.
Queries with no doc at or above the threshold are excluded from every metric (their recall is undefined);
how many were evaluated / excluded is reported as "queries" / "excluded".

Home Depot default threshold, 2.67: relevance is the mean of >= 3 raters on 1 (irrelevant) .. 3 (exact
match); 2.67 means at least two of three raters called it an exact match. Judgments were pooled from
the retailer's own results, so 68% of judged pairs score >= 2.33 ("mostly relevant"): that bar would call
two thirds of everything the old engine returned relevant and barely separate systems. 2.67 keeps 46%
and matches the data README's suggestion. It stays a parameter; nDCG uses the graded gains regardless.
"""
from __future__ import annotations

import math

HOMEDEPOT_THRESHOLD = 2.67
GAIN_OFFSET = 1.0  # gain = relevance - GAIN_OFFSET (so the scale's "irrelevant" 1.0 earns nothing)
COUNT_KEYS = ("queries", "excluded")


def _ndcg(ranked: list[str], judged: dict[str, float], k: int) -> float:
    gain = {d: max(r - GAIN_OFFSET, 0.0) for d, r in judged.items()}
    dcg = sum(gain.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(gain.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def compute_metrics(run: dict[str, list[str]], qrels: dict[str, dict[str, float]], ks=(10, 100),
                    threshold: float = HOMEDEPOT_THRESHOLD) -> dict[str, float]:
    """Mean metrics over the qrels' queries that have a relevant doc; keys "P@K", "R@K" for each K in ks,
    "nDCG@10", "MRR@10", plus "queries" (evaluated) and "excluded". A query absent from `run` scores 0."""
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("P", "R")}
    sums.update({"nDCG@10": 0.0, "MRR@10": 0.0})
    n = excluded = 0
    for q, judged in qrels.items():
        relevant = {d for d, r in judged.items() if r >= threshold}
        if not relevant:
            excluded += 1
            continue
        n += 1
        ranked = list(run.get(q, []))
        for k in ks:
            hits = sum(1 for d in ranked[:k] if d in relevant)
            sums[f"P@{k}"] += hits / k
            sums[f"R@{k}"] += hits / len(relevant)
        sums["nDCG@10"] += _ndcg(ranked, judged, 10)
        sums["MRR@10"] += next((1.0 / (i + 1) for i, d in enumerate(ranked[:10]) if d in relevant), 0.0)
    if n == 0:
        raise ValueError(f"no query has a doc with relevance >= {threshold}: nothing to evaluate")
    out = {key: v / n for key, v in sums.items()}
    out.update(queries=float(n), excluded=float(excluded))
    return out


def overlap_at_k(run_a: dict[str, list[str]], run_b: dict[str, list[str]], k: int) -> float:
    """Mean over shared queries of |top_k(a) ∩ top_k(b)| / k: how much of the teacher's top-k the student
    reproduces (1.0 = same set, order ignored)."""
    shared = [q for q in run_a if q in run_b]
    if not shared:
        raise ValueError("the two runs share no query id")
    return sum(len(set(run_a[q][:k]) & set(run_b[q][:k])) / k for q in shared) / len(shared)


def recovery(student: dict[str, float], teacher: dict[str, float]) -> dict[str, float]:
    """student metric / teacher metric for every metric both report (counts skipped; 0/0 -> nan)."""
    out = {}
    for key, t in teacher.items():
        if key in COUNT_KEYS or key not in student:
            continue
        out[key] = student[key] / t if t else float("nan")
    return out


def format_table(rows: dict[str, dict[str, float]], digits: int = 4) -> str:
    """A Markdown table: one row per system, one column per metric (in first-seen order)."""
    cols: list[str] = []
    for r in rows.values():
        cols += [c for c in r if c not in cols]

    def cell(c, v):
        return "" if v is None else (str(int(v)) if c in COUNT_KEYS else f"{v:.{digits}f}")

    body = {name: [cell(c, r.get(c)) for c in cols] for name, r in rows.items()}
    widths = [max([len(c)] + [len(b[j]) for b in body.values()]) for j, c in enumerate(cols)]
    width = max([len("system")] + [len(name) for name in rows])
    lines = ["| " + "system".ljust(width) + " | " + " | ".join(c.rjust(w) for c, w in zip(cols, widths)) + " |",
             "|" + "-" * (width + 2) + "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    for name, cells in body.items():
        lines.append("| " + name.ljust(width) + " | " + " | ".join(s.rjust(w) for s, w in zip(cells, widths)) + " |")
    return "\n".join(lines)
