"""`hlm train align|refine|teacher`: flags mirror the config dataclasses; a tiny align run through the CLI."""
import json
import os

import pytest

from hlm_engine.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("sample_data")


def test_flags_mirror_configs():
    ap = build_parser()
    a = ap.parse_args(["train", "refine", "--steps", "7", "--no-evaluate", "--max-products", "100"])
    assert (a.phase, a.steps, a.evaluate, a.max_products, a.resume) == ("refine", 7, False, 100, False)
    with pytest.raises(SystemExit):
        ap.parse_args(["train", "align", "--steps", "many"])


def test_cli_align_run(tiny_models, tmp_path, capsys):
    out = tmp_path / "align"
    rc = main(["train", "align", "--student", tiny_models["student"], "--teacher", tiny_models["teacher"],
               "--out-dir", str(out), "--steps", "2", "--batch-size", "8", "--holdout", "16",
               "--targets-dir", os.path.join(tiny_models["shared"], "targets")])
    assert rc == 0 and "distance_after" in capsys.readouterr().out
    assert json.load(open(out / "run_log.json"))["steps_done"] == 2
    bad = main(["train", "align", "--student", tiny_models["student"], "--teacher", tiny_models["teacher"],
                "--out-dir", str(out), "--loss", "huber"])
    assert bad == 2 and "unknown alignment loss" in capsys.readouterr().err
