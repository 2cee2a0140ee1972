"""Two gloo CPU processes under torchrun train to the same weights as one process on the same global batch
(the InfoNCE in-batch negatives span both ranks through the differentiable all-gather)."""
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

HERE = os.path.dirname(__file__)


def _run(cmd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("HLM_DATA_DIR", None)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_two_processes_match_one(tiny_models, tmp_path):
    base = dict(student=tiny_models["student"], teacher=tiny_models["teacher"], steps=3, batch_size=8, lr=1e-3,
                warmup_steps=1, num_negatives=3, shared_negatives=32, save_every=0, evaluate=False,
                doc_embeddings=os.path.join(tiny_models["shared"], "teacher_docs"))
    worker = os.path.join(HERE, "ddp_worker.py")
    one = dict(base, out_dir=str(tmp_path / "one"))
    _run([sys.executable, worker, json.dumps(one)])
    two = dict(base, out_dir=str(tmp_path / "two"))
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
          "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", worker, json.dumps(two)])
    log1 = json.load(open(tmp_path / "one" / "run_log.json"))
    log2 = json.load(open(tmp_path / "two" / "run_log.json"))
    assert log2["world_size"] == 2 and log1["world_size"] == 1
    for a, b in zip(log1["losses"], log2["losses"]):
        assert abs(a - b) < 1e-5 * max(1.0, abs(a))
    w1 = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    # Adam divides by sqrt(v): a coordinate whose gradient is ~0 can turn float-reordering noise into an
    # update of up to lr. So: every coordinate within lr/10, and all but a handful within 1e-5.
    lr = base["lr"]
    off = 0
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=lr / 10, msg=k)
        off += int(((w2[k] - w1[k]).abs() > 1e-5).sum())
    assert off <= 1e-4 * sum(v.numel() for v in w1.values()), off
