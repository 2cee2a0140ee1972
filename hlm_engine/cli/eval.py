"""`hlm eval`: retrieval metrics of a query encoder over an index; optional teacher row for recovery."""
from __future__ import annotations


def register(sub):
    from hlm_engine.retrieval.eval import HOMEDEPOT_THRESHOLD
    p = sub.add_parser("eval", help="P/R@10,100, nDCG@10, MRR@10 of a model over an index (+ teacher recovery)")
    p.add_argument("--index", required=True)
    p.add_argument("--model", required=True, help="query encoder (the student)")
    p.add_argument("--queries", required=True, help="TSV query_id, query")
    p.add_argument("--qrels", required=True, help="TSV query_id, product_id, relevance")
    p.add_argument("--teacher", default=None, help="also evaluate this encoder (e.g. mpnet): overlap + recovery")
    p.add_argument("--threshold", type=float, default=HOMEDEPOT_THRESHOLD, help="relevance counted as relevant")
    p.add_argument("-k", type=int, default=100, help="depth retrieved per query")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default="eval.json", help="JSON results file (written atomically)")
    p.add_argument("--no-check-teacher", action="store_true")
    p.set_defaults(func=run)


def run(a):
    from hlm_engine.retrieval.data import read_qrels, read_tsv
    from hlm_engine.retrieval.eval import compute_metrics, format_table, overlap_at_k, recovery
    from hlm_engine.io import write_json
    from hlm_engine.retrieval.retriever import Retriever

    q = read_tsv(a.queries, ["query_id", "query"])
    qrels = read_qrels(a.qrels)
    ks = tuple(sorted({10, a.k}))
    runs, rows = {}, {}
    for name, model in [("model", a.model)] + ([("teacher", a.teacher)] if a.teacher else []):
        r = Retriever.load(a.index, model, check_teacher=not a.no_check_teacher)
        hits = r.search(q["query"], k=a.k, batch_size=a.batch_size)
        runs[name] = {qid: [d for d, _ in h] for qid, h in zip(q["query_id"], hits)}
        rows[f"{name}: {model}"] = compute_metrics(runs[name], qrels, ks=ks, threshold=a.threshold)
    result = {"index": a.index, "threshold": a.threshold, "k": a.k, "metrics": rows}
    if a.teacher:
        m, t = rows[f"model: {a.model}"], rows[f"teacher: {a.teacher}"]
        rows["recovery (model / teacher)"] = recovery(m, t)
        result["overlap"] = {f"overlap@{k}": overlap_at_k(runs["model"], runs["teacher"], k) for k in ks}
    print(format_table(rows))
    if a.teacher:
        print("  ".join(f"{k} = {v:.4f}" for k, v in result["overlap"].items()))
    print(f"relevant = relevance >= {a.threshold}; nDCG gains = relevance - 1")
    write_json(a.out, result)
    print(f"wrote {a.out}")
    return 0
