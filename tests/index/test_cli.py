"""The offline -> online path through the CLI, on a tiny corpus with the student as its own "teacher"."""
import json
import os

import pytest

from hlm_engine.cli import main


def _tsv(path, header, rows):
    with open(path, "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(map(str, r)) + "\n")


def test_encode_index_search_eval(homedepot_dev, tmp_path, capsys):
    hd = homedepot_dev
    qids = [q for q in hd.query_ids if any(d in set(hd.doc_ids[:3000]) for d in hd.qrels[q])][:8]
    judged = sorted({d for q in qids for d in hd.qrels[q]})
    keep = [i for i, d in enumerate(hd.doc_ids) if d in set(judged)][:40] + list(range(40))
    keep = sorted(set(keep))
    _tsv(tmp_path / "p.tsv", ["product_id", "title"], [(hd.doc_ids[i], hd.doc_texts[i]) for i in keep[:-5]])
    _tsv(tmp_path / "new.tsv", ["product_id", "title"], [(hd.doc_ids[i], hd.doc_texts[i]) for i in keep[-5:]])
    _tsv(tmp_path / "q.tsv", ["query_id", "query"], [(q, hd.queries[hd.query_ids.index(q)]) for q in qids])
    _tsv(tmp_path / "r.tsv", ["query_id", "product_id", "relevance"],
         [(q, d, r) for q in qids for d, r in hd.qrels[q].items()])
    e, idx = str(tmp_path / "emb"), str(tmp_path / "idx")
    assert main(["encode-corpus", "--model", "minilm", "--corpus", str(tmp_path / "p.tsv"), "--out", e,
                 "--shard-size", "16", "--no-progress"]) == 0
    assert main(["index", "build", "--embeddings", e, "--kind", "ivf-flat", "--nlist", "2", "--out", idx]) == 0
    assert "ivf-flat index" in capsys.readouterr().out
    assert main(["encode-corpus", "--model", "minilm", "--corpus", str(tmp_path / "new.tsv"), "--out",
                 str(tmp_path / "emb2"), "--no-progress"]) == 0
    assert main(["index", "add", "--index", idx, "--embeddings", str(tmp_path / "emb2")]) == 0
    assert main(["index", "remove", "--index", idx, "--ids", hd.doc_ids[keep[0]]]) == 0
    assert main(["index", "info", "--index", idx]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{"):])
    assert info["count"] == len(keep) - 1 and info["kind"] == "ivf-flat" and info["dim"] == 384
    assert main(["search", "--index", idx, "--model", "minilm", "--query", hd.queries[0], "--query", "drill",
                 "-k", "3", "--corpus", str(tmp_path / "p.tsv")]) == 0
    out = capsys.readouterr().out
    assert out.count("query: ") == 2 and "  1. " in out and "  3. " in out
    res = str(tmp_path / "eval.json")
    assert main(["eval", "--index", idx, "--model", "minilm", "--teacher", "minilm", "--queries",
                 str(tmp_path / "q.tsv"), "--qrels", str(tmp_path / "r.tsv"), "-k", "20", "--threshold", "2.0",
                 "--out", res]) == 0
    assert "nDCG@10" in capsys.readouterr().out
    r = json.load(open(res))
    assert r["overlap"]["overlap@10"] == pytest.approx(1.0)  # same encoder on both sides
    assert r["metrics"]["recovery (model / teacher)"]["nDCG@10"] == pytest.approx(1.0)
    # The teacher's index refuses a query encoder of another dimension, with a clear message.
    assert main(["search", "--index", idx, "--model", "mpnet", "--query", "drill"]) == 2
    assert "384-d but the query encoder emits 768-d" in capsys.readouterr().err
    assert os.path.exists(os.path.join(idx, "manifest.json"))
