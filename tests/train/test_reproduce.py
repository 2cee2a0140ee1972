"""`hlm reproduce` end to end on the packaged sample set with tiny random-init models and a few steps per
phase: every phase runs, the artifacts land in the fixed places, the table and phase times are published,
and a run interrupted mid-way recomputes nothing that had finished."""
import json
import os

import pytest

from hlm_engine import Encoder
from hlm_engine.train import reproduce
from hlm_engine.train.runner import MARKER

pytestmark = pytest.mark.usefixtures("sample_data")


def _argv(tiny, root, publish):
    return ["--work-dir", str(root), "--teacher", tiny["teacher"], "--student", tiny["student"],
            "--teacher-steps", "3", "--align-steps", "4", "--align-lr", "2e-3", "--refine-steps", "2",
            "--log-queries", "120", "--prune-schedule", "1x64", "--prune-align-steps", "2",
            "--prune-final-align-steps", "3", "--prune-refine-steps", "1", "--eval-every", "2", "--publish", str(publish)]


def _markers(root):
    out = {}
    for d in sorted(os.listdir(root / "phases")):
        m = root / "phases" / d / MARKER
        if m.exists():
            out[d.rsplit("-", 1)[0]] = os.stat(m).st_mtime_ns
    return out


def test_reproduce_runs_every_phase_and_resumes(tiny_models, tmp_path, monkeypatch):
    root, pub = tmp_path / "r", tmp_path / "out" / "reproduction.json"
    argv = _argv(tiny_models, root, pub)

    # Interrupted in refinement: teacher and alignment are finished by then.
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "train_refine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce.main(argv)
    first = _markers(root)
    assert set(first) == {"teacher", "align"}
    monkeypatch.undo()
    monkeypatch.delenv("HLM_DATA_DIR", raising=False)

    assert reproduce.main(argv) == 0
    second = _markers(root)
    assert set(second) == {"teacher", "align", "refine", "prune", "baseline"}
    assert all(second[k] == v for k, v in first.items())  # nothing finished was recomputed

    for d in ("teacher", "student", "student-pruned"):
        Encoder.from_pretrained(str(root / d), backend="torch")
    assert (root / "corpus" / "manifest.json").exists() and (root / "index" / "manifest.json").exists()
    pruned = Encoder.from_pretrained(str(root / "student-pruned"), backend="torch")
    assert pruned.config.num_layers == 1 and pruned.dim == 96

    res = json.load(open(pub))
    names = res["order"]
    assert names[0] == "teacher (off the shelf)" and names[1].startswith("teacher (fine-tuned")
    assert {"student off the shelf (symmetric)", "student aligned", "student aligned + refined",
            "baseline: direct asymmetric (no align)"} <= set(names)
    assert any(n.startswith("student pruned 1x64") for n in names)
    for rel in ("main", "grade3"):
        assert {"R@10", "R@100", "nDCG@10", "rec R@100"} <= set(res["table"][rel]["student aligned"])
    assert [c["step"] for c in res["align_curve"]] == [0, 2, 4]
    assert set(res["phases"]) >= {"teacher", "align", "refine", "prune", "baseline", "evaluate"}
    assert "| student aligned + refined |" in (tmp_path / "out" / "reproduction.md").read_text()

    # A third run computes nothing: every phase is cached and the table is the same.
    assert reproduce.main(argv) == 0
    assert _markers(root) == second
    again = json.load(open(pub))
    assert again["table"] == res["table"]
    assert all(again["phases"][k]["cached"] for k in ("teacher", "align", "refine", "prune", "baseline"))
    # the student corpus a pass found finished reports the time of the pass that encoded it, marked cached
    sym = "student corpus (symmetric row)"
    assert again["phases"][sym] == {"wall_seconds": res["phases"][sym]["wall_seconds"], "cached": True}
    assert not res["phases"][sym]["cached"]


def test_teacher_layers_option_is_checked_and_capped(tiny_models):
    from hlm_engine.config import load_folder_config
    from hlm_engine.train.demo import teacher_recipe
    depth = load_folder_config(tiny_models["teacher"]).num_layers
    assert teacher_recipe(tiny_models["teacher"], 99)["trainable_layers"] == depth  # capped at the depth
    assert teacher_recipe(tiny_models["teacher"], 1)["trainable_layers"] == 1
    with pytest.raises(ValueError, match="top layers must be >= 1, got 0"):
        teacher_recipe(tiny_models["teacher"], 0)
