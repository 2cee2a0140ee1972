"""`hlm report`: the ONNX Runtime peer section renders from bench/results/onnx_peer.json (tables in a fixed system
order, the run's targets, the recall table, a person's note kept in the file), stamps prefer the time a run
recorded, and the README's generated block is exactly what `hlm report --readme` writes from the committed
results (nothing hand-edited inside the markers, which the next regeneration would silently drop)."""
import json
import os
import re

from hlm_engine.report import report, tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


def _system(p50, qps, cos, weights=None):
    out = {"p50_ms": p50, "p99_ms": 2 * p50, "qps": qps, "min_cos_vs_fp32": cos}
    if weights:
        out.update({"weight_bytes_per_query": weights, "weight_gbps_at_p50": weights / p50 / 1e6,
                    "fraction_of_stream": weights / p50 / 1e6 / 20.0})
    return out


def _peer_file(tmp_path, note=None):
    systems = {"ov_fp32": _system(7.0, 370, 1.0), "int8": _system(1.8, 600, 0.9988, 10_782_720),
               "ort_int8": _system(2.9, 575, 0.904), "fp32": _system(3.6, 450, 1.0, 42_550_272),
               "bf16": _system(2.9, 451, 0.99999, 21_316_608), "ort_fp32": _system(5.1, 438, 1.0)}
    row = {"threads": 1, "queries": 1163, "stream_gbps": 20.0, "mean_tokens_per_query": 6.6,
           "fp32_min_cos_vs_reference": 1.0, "tokenize_p50_ms": 0.1, "systems": systems,
           "meets_targets": {"int8_cos": True, "fp32_qps_1.3x_ort": False, "fp32_p50_0.75x_ort": True}}
    recall = {"minilm": {"index": "minilm", "products": 54667, "fp32": {"R@100": 0.7093, "queries": 958.0},
                         "bf16": {"R@100": 0.7093}, "int8": {"R@100": 0.7127}, "bf16_recall100_ratio": 1.0,
                         "int8_recall100_ratio": 1.0048, "meets_target": True}}
    d = {"model": "minilm", "machine": {"cpu": "x86_64", "cores": 2, "time": "2030-01-02 03:04", "commit": "abc1234"},
         "peers": {"onnxruntime": "1.31.1"}, "rows": {"threads=1": row}, "recall": recall}
    if note:
        d["note"] = note
    (tmp_path / "onnx_peer.json").write_text(json.dumps(d))
    return d


def test_onnx_peer_section(tmp_path):
    d = _peer_file(tmp_path, note="Read me: the peer's own p50 moved.")
    ctx = report.Context(str(tmp_path), str(tmp_path / "README.md"), 3, draw=False)
    text = report.render_sections(str(tmp_path), ctx)
    sec = text[text.index("### Online query latency vs ONNX Runtime"):]
    sec = sec[:sec.index("\n### ", 5)]
    assert "commit abc1234" in sec and "2030-01-02 03:04" in sec  # the run's own time, not the file's mtime
    assert "onnxruntime 1.31.1" in sec
    rows = [line.split("|")[1].strip() for line in sec.splitlines() if line.startswith("| ") and "system" not in line]
    assert rows[:6] == ["fp32", "bf16", "int8", "ort_fp32", "ort_int8", "ov_fp32"]
    assert "| fp32 | 3.60 | 7.20 | 450 | – | 0.71 | 42.6 |" in sec  # a run before the FMA roof was measured
    assert "targets: fp32_p50_0.75x_ort met, fp32_qps_1.3x_ort MISSED, int8_cos met" in sec  # fixed order
    assert "| minilm | minilm | 54,667 | 958 | 0.7093 | 0.7093 (100.00%) | 0.7127 (100.48%) | **met** |" in sec
    assert sec.rstrip().endswith("Read me: the peer's own p50 moved.")
    assert tables.onnx_peer_table(d["rows"]["threads=1"]) in sec  # the bench prints the same table


def test_batch64_rates_read_against_the_fma_roof(tmp_path):
    row = _peer_file(tmp_path)["rows"]["threads=1"]
    row["fma_peak_gflops"] = 100.0
    for s, g in {"fp32": 63.0, "ort_fp32": 61.3, "int8": 84.0}.items():
        row["systems"][s].update({"gflops_b64": g, "fraction_of_fma_peak": g / 100.0})
    text = tables.onnx_peer_table(row)
    assert "FMA roof 100 GFLOP/s" in text.splitlines()[0]
    assert "| fp32 | 3.60 | 7.20 | 450 | 63.0 (63%) | 0.71 |" in text
    assert "| int8 | 1.80 | 3.60 | 600 | 84.0 (84%) |" in text
    assert "| ov_fp32 | 7.00 | 14.00 | 370 | – |" in text  # a system the run did not rate


def test_a_layout_it_does_not_know_is_named_not_fatal(tmp_path):
    (tmp_path / "onnx_peer.json").write_text(json.dumps({"rows": {"threads=1": {"threads": 1}}}))
    text = report.render_sections(str(tmp_path), report.Context(str(tmp_path), str(tmp_path / "R.md"), 2, False))
    assert "`onnx_peer.json` has a layout this report does not know" in text


def _undated(text: str) -> str:
    # A run that recorded no time is dated by its file (git's commit date, else mtime): a clone's depth or a
    # checkout can move that, so dates are not compared; everything else is.
    return re.sub(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}[+-]\d{4})?", "<date>", text).strip()


def test_readme_block_is_what_the_report_writes():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    a, b = readme.index(report.BEGIN) + len(report.BEGIN), readme.index(report.END)
    block = report.render_readme_block(RESULTS, os.path.join(ROOT, "README.md"), os.path.join(RESULTS, "REPORT.md"))
    assert _undated(readme[a:b]) == _undated(block), (
        "README.md's results block differs from `hlm report --readme README.md` over bench/results: regenerate "
        "it (hand-written context belongs in the results file's \"note\")")
