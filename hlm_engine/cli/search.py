"""`hlm search`: encode queries with the (student) model, search the ad index, print the top ads."""
from __future__ import annotations

import os


def register(sub):
    p = sub.add_parser("search", help="search an index with a query encoder and print the top ads")
    p.add_argument("--index", required=True)
    p.add_argument("--model", required=True, help="query encoder: model folder (aligned student) or name")
    p.add_argument("--query", action="append", required=True, help="repeat for several queries")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--corpus", default=None,
                   help="TSV with the ad titles (default: $HLM_DATA_DIR/homedepot/products.tsv if present)")
    p.add_argument("--id-column", default="product_id")
    p.add_argument("--text-column", default="title")
    p.add_argument("--no-check-teacher", action="store_true", help="pair even when the teacher cannot be verified")
    p.set_defaults(func=run)


def run(a):
    from hlm_engine.retrieval.data import data_dir, read_tsv
    from hlm_engine.retrieval.retriever import Retriever

    corpus = a.corpus
    if corpus is None and data_dir():
        guess = os.path.join(data_dir(), "homedepot", "products.tsv")
        corpus = guess if os.path.exists(guess) else None
    titles = {}
    if corpus:
        t = read_tsv(corpus, [a.id_column, a.text_column])
        titles = dict(zip(t[a.id_column], t[a.text_column]))
    r = Retriever.load(a.index, a.model, doc_texts=titles, check_teacher=not a.no_check_teacher)
    for q, hits in zip(a.query, r.search(a.query, k=a.k)):
        print(f"query: {q}")
        for rank, (doc, score) in enumerate(hits, 1):
            print(f"  {rank:3d}. {score:.4f}  {doc:>10}  {r.title(doc)}")
    return 0
