"""The design-choice study on a tiny grid (random-init 2-layer models, the packaged sample data): two cells run
end to end (align -> prune -> refine; a Qwen3-architecture student built from our config with a truncated
dim), a second run computes nothing, `hlm report` renders REPORT.md with its plots and rewrites the README
block; bad config input fails early with a message naming the problem."""
import json

import numpy as np
import pytest

from hlm_engine.cli import main as hlm
from hlm_engine.train import study as study_mod
from hlm_engine.train.study import Study
from hlm_engine.train.study_config import load_config

pytestmark = pytest.mark.usefixtures("sample_data")


def _config(tiny, path, extra_cell: str = "") -> str:
    text = f'''
[study]
teacher = "{tiny['teacher']}"
train_queries = "all"
log_queries = "all"
holdout = 32
max_length = 32
calibration_queries = 48
train_threads = 1
latency_queries = 4
throughput_queries = 16
speed_rounds = 1

[defaults]
student = "{tiny['student']}"
align_steps = 3
align_batch_size = 16
align_lr = 2e-3
refine_steps = 2
refine_batch_size = 8
num_negatives = 3
prune_align_steps = 2

[[cell]]
name = "aligned, pruned, refined"
axis = "chain"
prune = "1x64"
refine = true

[[cell]]
name = "qwen3 random, dim 48"
axis = "scale"
student = "qwen3-random"
qwen3_layers = 1
qwen3_hidden = 32
qwen3_heads = 2
qwen3_kv_heads = 1
qwen3_head_dim = 16
qwen3_ffn = 64
dim = 48
{extra_cell}'''
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _forbid(monkeypatch):
    """Every way the study computes something raises: a cached rerun must not reach any of them."""
    def boom(*a, **k):
        raise AssertionError("a cached study recomputed something")
    import hlm_engine.train.align as align
    import hlm_engine.train.demo  # noqa: F401  (imported before the patch: `from .embed import` binds names)
    import hlm_engine.train.embed as embed
    import hlm_engine.train.progressive as progressive
    import hlm_engine.train.refine as refine
    import hlm_engine.train.study_speed as speed
    for mod, name in ((align, "train_align"), (refine, "train_refine"), (progressive, "run_progressive"),
                      (embed, "cached_encode"), (speed, "measure"), (study_mod, "build_qwen3_student"),
                      (embed, "retrieval_quality")):
        monkeypatch.setattr(mod, name, boom)


def test_study_runs_caches_and_reports(tiny_models, tmp_path, monkeypatch):
    cfg = load_config(_config(tiny_models, tmp_path / "tiny.toml"))
    work = str(tmp_path / "work")
    first = Study(cfg, work, progress=False).run()

    assert [c["name"] for c in first["cells"]] == ["aligned, pruned, refined", "qwen3 random, dim 48"]
    chain, qwen = first["cells"]
    assert [p["phase"] for p in chain["phases"]] == ["align", "prune", "refine"]
    assert [p["phase"] for p in qwen["phases"]] == ["build", "align"]
    assert qwen["dim"] == 48 and chain["dim"] == 96
    for c in first["cells"]:
        assert 0.0 <= c["metrics"]["R@100"] <= 1.0 and np.isfinite(c["recovery"]["R@100"])
        assert c["speed"]["p50_ms"] > 0 and c["speed"]["qps_b64"] > 0 and c["params"] > 0
        assert c["train_wall_s"] > 0 and c["train_cpu_s"] > 0
    assert first["teacher"]["speed"]["p50_ms"] > 0 and first["computed_this_run"]
    # The Qwen3 student really is the Qwen3 architecture with the real Qwen3 vocabulary.
    from hlm_engine.config import load_folder_config
    qcfg = load_folder_config(qwen["model"])
    assert qcfg.arch == "qwen3" and qcfg.vocab_size == 151669 and qcfg.output_dim == 96

    again = Study(cfg, work, progress=False, remeasure=True).run()  # --remeasure: only the timing reruns
    assert [x.split(":")[0] for x in again["computed_this_run"]] == ["speed"]

    _forbid(monkeypatch)
    second = Study(load_config(str(tmp_path / "tiny.toml")), work, progress=False).run()
    assert second["computed_this_run"] == []
    for a, b, c in zip(first["cells"], second["cells"], again["cells"]):
        assert a["metrics"] == b["metrics"] == c["metrics"] and b["speed"] == c["speed"]

    # The report: the study's tables and plots, "not measured yet" for the benchmark files that are absent.
    results = tmp_path / "results"
    results.mkdir()
    (results / "study.json").write_text(json.dumps(second))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Results\n<!-- report:begin -->\nold numbers\n<!-- report:end -->\n\n## After\n")
    assert hlm(["report", "--results-dir", str(results), "--readme", str(readme)]) == 0
    report = (results / "REPORT.md").read_text()
    for text in ("aligned, pruned, refined", "qwen3 random, dim 48", "Cost per phase",
                 "report_study_pareto.png", "report_phase_recovery.png", "Reproduce at full scale on GPUs",
                 "Not measured yet (command:", "random init"):
        assert text in report, text
    for png in ("report_study_pareto.png", "report_phase_recovery.png"):
        with open(results / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", png
    new = readme.read_text()
    assert "old numbers" not in new and "aligned, pruned, refined" in new and new.endswith("## After\n")
    assert "(results/report_study_pareto.png)" in new  # image links relative to the README


def test_gpu_guide_commands_parse():
    from hlm_engine.report.gpu import STEPS, check_command
    for step, cmd, _ in STEPS:
        assert check_command(cmd)[0], f"{step}: {cmd}"


def test_bad_config_input(tiny_models, tmp_path, capsys):
    path = _config(tiny_models, tmp_path / "ok.toml")
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        load_config(str(tmp_path / "nope.toml"))
    assert hlm(["study", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err

    for name, cell, match in (
            ("key", 'name = "typo"\nalign_stpes = 3', r"'typo'.*unknown key\(s\) align_stpes"),
            ("obj", 'name = "x"\nobjective = "huber"',
             "unknown objective 'huber'; choose one of l2, mse, cosine, infonce, none"),
            ("none", 'name = "x"\nobjective = "none"', "needs refine = true"),
            ("type", 'name = "x"\nalign_steps = "many"', "align_steps = 'many' must be an integer"),
            ("dup", 'name = "qwen3 random, dim 48"', "duplicate cell name")):
        bad = _config(tiny_models, tmp_path / f"{name}.toml", f"\n[[cell]]\n{cell}\n")
        with pytest.raises(ValueError, match=match):
            load_config(bad)
    bad = tmp_path / "syntax.toml"
    bad.write_text("[study\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="--set align_stepz: unknown key"):
        load_config(path, ["align_stepz=3"])
    cfg = load_config(path, ["align_steps=7", "log_queries=all", "threads=2"])
    assert all(c.align_steps == 7 for c in cfg.cells) and cfg.settings.log_queries is None
    assert cfg.settings.threads == 2
    with pytest.raises(ValueError, match="prune = '4by2'"):
        load_config(_config(tiny_models, tmp_path / "prune.toml", '\n[[cell]]\nname = "x"\nprune = "4by2"\n'))


def test_demo_publishes_the_training_table_for_the_report(tiny_models, tmp_path):
    """`make demo --publish` writes the pipeline table; `hlm report` renders it as the training section."""
    from hlm_engine.train import demo
    results = tmp_path / "results"
    results.mkdir()
    out = results / "training.json"
    assert demo.main(["--work-dir", str(tmp_path / "demo"), "--teacher", tiny_models["teacher"],
                      "--student", tiny_models["student"], "--align-steps", "3", "--refine-steps", "2",
                      "--log-queries", "96", "--teacher-steps", "2", "--publish", str(out)]) == 0
    d = json.loads(out.read_text())
    names = d["order"]
    assert names[0] == "teacher (off the shelf)" and "student aligned + refined" in names
    assert set(names) == set(d["table"])
    assert d["machine"]["torch"] and d["sizes"]["products"] > 0 and d["phase_seconds"]["align"] > 0
    assert hlm(["report", "--results-dir", str(results)]) == 0
    report = (results / "REPORT.md").read_text()
    sec = report[report.index("Training: teacher → align → refine"):]
    assert "| student aligned + refined |" in sec and "Served through the engine" in sec
