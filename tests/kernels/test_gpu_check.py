"""bench/gpu_check.sh --dry-run: the GPU check's Python driver end to end on CPU (kernels in the Triton
interpreter, tiny model sizes), so the script a lent GPU runs is known to work before it gets there."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "gpu_check.json") as f:
        res = json.load(f)
    assert res["dry_run"] and not res["errors"], res["errors"][:5]
    ops = {(r["model"], r["op"]) for r in res["kernels"]}
    assert len(ops) == 7 + 7 + 8 and all(r["ok"] for r in res["kernels"])
    assert {r["model"] for r in res["encoder"]} == {"minilm", "qwen3"}
    assert all(r["min_cosine_vs_torch"] >= 0.9999 and r["roofline_H200_us"] > 0 for r in res["encoder"])
