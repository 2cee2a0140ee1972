"""`python -m hlm_engine.quicklook` runs end to end on the shipped sample set (the `make demo` path without
$HLM_DATA_DIR). MiniLM stands in for the teacher too, to keep this a few seconds; the real pairing runs
in `make demo`."""
import re

from hlm_engine.quicklook import main


def test_demo_on_sample_set(monkeypatch, capsys):
    monkeypatch.delenv("HLM_DATA_DIR", raising=False)
    assert main(["--teacher", "minilm", "--latency-queries", "8", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "sample set" in out and "364 of 364 product titles" in out
    recalls = [float(x) for x in re.findall(r"Recall@10 ([0-9.]+) over 50 dev queries", out)]
    assert len(recalls) == 2 and min(recalls) > 0.5  # the sample qrels are consistent with the titles
    assert out.count("query: ") == 2 and "docs" in out and "p50" in out
