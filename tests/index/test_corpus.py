"""encode_corpus: fp16 shards + manifest, resume after a kill, refusal to mix models, torchrun ranks.

Small corpora with the student (MiniLM) keep these quick; the teacher slice lives in conftest."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hlm_engine.retrieval.corpus import encode_corpus, load_embeddings, read_manifest
from hlm_engine.weights import weights_checksum


@pytest.fixture(scope="module")
def products(homedepot_dev):
    return homedepot_dev.doc_ids, homedepot_dev.doc_texts


def _stat(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def _cos_min(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def test_roundtrip_manifest_and_fp16(products, minilm, tmp_path, data_dir):
    ids, texts = products[0][:100], products[1][:100]
    src = os.path.join(data_dir, "homedepot", "products.tsv")
    m = encode_corpus(minilm, ids, texts, str(tmp_path / "e"), shard_size=40, batch_size=16, source=src,
                      show_progress=False)
    assert m["count"] == 100 and m["dim"] == 384 and m["dtype"] == "float16" and m["num_shards"] == 3
    assert m["model"]["checksum"] == weights_checksum(minilm.folder)
    assert m["normalize"] is True and len(m["source"]["sha256"]) == 64
    assert np.load(tmp_path / "e" / "shards" / "00000.npy").dtype == np.float16
    got_ids, vecs = load_embeddings(str(tmp_path / "e"))
    assert got_ids == ids and vecs.dtype == np.float32 and vecs.shape == (100, 384)
    ref = minilm.encode(texts)
    assert _cos_min(vecs, ref) > 0.9999  # fp16 storage of unit vectors: ~1e-4 relative error at most
    # Already complete: returns the same manifest without touching any shard.
    before = {f: _stat(tmp_path / "e" / "shards" / f) for f in os.listdir(tmp_path / "e" / "shards")}
    assert encode_corpus("minilm", ids, texts, str(tmp_path / "e"), shard_size=40, show_progress=False,
                         source=src) == m
    assert {f: _stat(tmp_path / "e" / "shards" / f) for f in os.listdir(tmp_path / "e" / "shards")} == before


def test_resume_keeps_finished_shards(products, minilm, tmp_path):
    ids, texts = products[0][:120], products[1][:120]
    out = tmp_path / "e"
    encode_corpus(minilm, ids, texts, str(out), shard_size=30, batch_size=30, show_progress=False)
    # Simulate an interruption: shards 1 and 3 never finished, the manifest was never written, and a
    # killed writer left a temp file behind.
    for i in (1, 3):
        os.remove(out / "shards" / f"{i:05d}.npy")
    os.remove(out / "manifest.json")
    (out / "shards" / ".00001.npy.abc.tmp").write_bytes(b"partial")
    with pytest.raises(ValueError, match="unfinished .2 of 4 shards"):
        read_manifest(str(out))
    kept = {i: _stat(out / "shards" / f"{i:05d}.npy") for i in (0, 2)}
    encode_corpus(minilm, ids, texts, str(out), shard_size=30, batch_size=30, show_progress=False)
    assert {i: _stat(out / "shards" / f"{i:05d}.npy") for i in (0, 2)} == kept
    assert not [f for f in os.listdir(out / "shards") if f.endswith(".tmp")]
    got_ids, vecs = load_embeddings(str(out))
    assert got_ids == ids and _cos_min(vecs, minilm.encode(texts)) > 0.9999


def test_refuses_other_model_or_corpus(products, minilm, tmp_path):
    ids, texts = products[0][:40], products[1][:40]
    out = str(tmp_path / "e")
    encode_corpus(minilm, ids, texts, out, shard_size=16, show_progress=False)
    with pytest.raises(ValueError, match="different model/corpus.*model"):
        encode_corpus("mpnet", ids, texts, out, shard_size=16, show_progress=False)
    with pytest.raises(ValueError, match="corpus_checksum"):
        encode_corpus(minilm, ids, texts[:-1] + ["another title"], out, shard_size=16, show_progress=False)
    with pytest.raises(ValueError, match="duplicate doc id '1'"):
        encode_corpus(minilm, ["1", "2", "1"], ["a", "b", "c"], str(tmp_path / "d"), show_progress=False)


_KILL_SCRIPT = """
import json, sys
from hlm_engine.retrieval.corpus import encode_corpus
ids, texts = json.load(open(sys.argv[1]))
encode_corpus("minilm", ids, texts, sys.argv[2], shard_size=10, batch_size=2, show_progress=False)
"""


def test_resume_after_kill_reencodes_nothing_written(products, minilm, tmp_path):
    n = 160
    ids, texts = products[0][:n], products[1][:n]
    (tmp_path / "c.json").write_text(json.dumps([ids, texts]))
    out = tmp_path / "e"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "c.json"), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out / "shards"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if shards.is_dir() and sum(f.endswith(".npy") for f in os.listdir(shards)) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"encoder exited before the kill: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)  # mid-encoding: no cleanup handlers run
    finally:
        proc.wait()
        proc.stderr.close()
    done = {f: _stat(shards / f) for f in os.listdir(shards) if f.endswith(".npy") and not f.startswith(".")}
    assert 3 <= len(done) < n // 10 and not (out / "manifest.json").exists()
    encode_corpus(minilm, ids, texts, str(out), shard_size=10, batch_size=32, show_progress=False)
    assert {f: _stat(shards / f) for f in done} == done  # finished shards were neither rewritten nor re-encoded
    got_ids, vecs = load_embeddings(str(out))
    assert got_ids == ids and _cos_min(vecs, minilm.encode(texts)) > 0.9999


_DIST_SCRIPT = """
import json, os, sys
from hlm_engine.retrieval.corpus import encode_corpus
ids, texts = json.load(open(sys.argv[1]))
m = encode_corpus("minilm", ids, texts, sys.argv[2], shard_size=16, batch_size=8, show_progress=False)
import torch.distributed as dist
open(sys.argv[2] + f".rank{dist.get_rank()}", "w").write(str(dist.get_world_size()))
dist.destroy_process_group()
"""


def test_torchrun_two_ranks(products, minilm, tmp_path):
    ids, texts = products[0][:100], products[1][:100]
    (tmp_path / "c.json").write_text(json.dumps([ids, texts]))
    (tmp_path / "run.py").write_text(_DIST_SCRIPT)
    out = str(tmp_path / "e")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(tmp_path / "run.py"), str(tmp_path / "c.json"), out],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [open(out + f".rank{i}").read() for i in (0, 1)] == ["2", "2"]  # both ranks ran, world of 2
    m = read_manifest(out)
    assert m["num_shards"] == 7 and m["count"] == 100
    got_ids, vecs = load_embeddings(out)
    assert got_ids == ids and _cos_min(vecs, minilm.encode(texts)) > 0.9999
