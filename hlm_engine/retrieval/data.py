"""Reading the project's data: TSV files with named columns, the Home Depot set, the query log.

The data directory is a setting ($HLM_DATA_DIR, or an explicit argument), never a path baked into code.
Without it, the small sample set shipped in the package (`hlm_engine/sample_data/`) stands in.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "sample_data")  # hlm_engine/sample_data


def data_dir(explicit: str | None = None) -> str | None:
    """The real data folder ($HLM_DATA_DIR) if set and present, else None."""
    d = explicit or os.environ.get("HLM_DATA_DIR")
    if not d:
        return None
    if not os.path.isdir(d):
        raise FileNotFoundError(f"data dir {d!r} (from {'argument' if explicit else '$HLM_DATA_DIR'}) does not exist")
    return d


def read_tsv(path: str, columns: list[str] | tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """Columns of a headered TSV as lists of strings; missing columns or an empty file raise ValueError."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    csv.field_size_limit(1 << 24)
    with open(path, newline="", encoding="utf-8") as f:
        r = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(r, None)
        if header is None:
            raise ValueError(f"{path}: empty file (expected a header row)")
        want = list(columns) if columns else header
        missing = [c for c in want if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; columns are {header}")
        idx = [header.index(c) for c in want]
        out: dict[str, list[str]] = {c: [] for c in want}
        for lineno, row in enumerate(r, start=2):
            if not row:
                continue
            if len(row) < len(header):
                raise ValueError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
            for c, i in zip(want, idx):
                out[c].append(row[i])
    return out


def read_texts(path: str, column: str | None = None) -> list[str]:
    """A .txt file (one text per line) or one column of a .tsv file."""
    if path.endswith(".tsv"):
        if not column:
            raise ValueError(f"{path}: a .tsv input needs --column (the text column)")
        return read_tsv(path, [column])[column]
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


@dataclass
class RetrievalSet:
    """A corpus of ads, queries and graded qrels (query_id -> {doc_id: relevance})."""
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, float]]

    def doc_text(self) -> dict[str, str]:
        return dict(zip(self.doc_ids, self.doc_texts))


def read_qrels(path: str) -> dict[str, dict[str, float]]:
    t = read_tsv(path, ["query_id", "product_id", "relevance"])
    qrels: dict[str, dict[str, float]] = {}
    for q, d, r in zip(t["query_id"], t["product_id"], t["relevance"]):
        qrels.setdefault(q, {})[d] = float(r)
    return qrels


def load_homedepot(split: str = "dev", root: str | None = None) -> RetrievalSet:
    """Home Depot products + queries/qrels of `split` (train|dev) from the data dir, else the sample set."""
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    d = data_dir(root)
    base = os.path.join(d, "homedepot") if d else SAMPLE_DIR
    p = read_tsv(os.path.join(base, "products.tsv"), ["product_id", "title"])
    q = read_tsv(os.path.join(base, f"queries_{split}.tsv"), ["query_id", "query"])
    return RetrievalSet(p["product_id"], p["title"], q["query_id"], q["query"],
                        read_qrels(os.path.join(base, f"qrels_{split}.tsv")))


def load_query_log(root: str | None = None) -> list[str]:
    """The unlabeled query log for alignment (data dir), else the sample queries."""
    d = data_dir(root)
    if d:
        return read_tsv(os.path.join(d, "queries", "unlabeled_queries.tsv"), ["query"])["query"]
    return read_tsv(os.path.join(SAMPLE_DIR, "unlabeled_queries.tsv"), ["query"])["query"]
