"""The phase runner: every phase config shares the Optim (and, where it reads Home Depot, the Slice) block, a
phase's cache key is a stable hash of its result-bearing fields, a finished phase is never run again, and an
encoding cached at another shard size is reused (issue 18)."""
import dataclasses
import json
import os

import numpy as np
import pytest

from hlm_engine.train.align import AlignConfig
from hlm_engine.train.embed import cached_encode
from hlm_engine.train.progressive import ProgressiveConfig
from hlm_engine.train.refine import RefineConfig
from hlm_engine.train.runner import MARKER, Optim, Slice, block, phase_key, prepare, run_phase
from hlm_engine.train.teacher import TeacherConfig


def _names(cls):
    return {f.name for f in dataclasses.fields(cls)}


def test_every_phase_config_shares_the_blocks():
    for cls in (TeacherConfig, AlignConfig, RefineConfig, ProgressiveConfig):
        assert _names(Optim) <= _names(cls), cls.__name__
    for cls in (TeacherConfig, RefineConfig, ProgressiveConfig):
        assert _names(Slice) <= _names(cls), cls.__name__
    # per-phase defaults of the shared block survive
    assert (AlignConfig().batch_size, RefineConfig().batch_size, TeacherConfig().batch_size) == (64, 32, 16)
    assert (RefineConfig().lr, TeacherConfig().save_every, ProgressiveConfig().steps) == (2e-5, 50, 300)
    r = RefineConfig(max_products=7, seed=3, lr=1e-3)
    assert block(r, Slice)["max_products"] == 7 and block(r, Optim)["lr"] == 1e-3 and block(r, Slice)["seed"] == 3


def test_phase_key_is_stable_and_ignores_where_to_write():
    a = AlignConfig(steps=10, lr=1e-3)
    assert phase_key(a) == phase_key(AlignConfig(steps=10, lr=1e-3))
    assert phase_key(a) == phase_key(dataclasses.replace(a, out_dir="elsewhere", resume=True, save_every=7,
                                                         stop_after=2, model_dir="m"))
    assert phase_key(a) != phase_key(dataclasses.replace(a, steps=11))
    assert phase_key(RefineConfig(steps=10)) != phase_key(AlignConfig(steps=10))  # the phase is part of it
    assert len(phase_key(a)) == 12


def test_run_phase_runs_once_per_config(tmp_path):
    calls = []

    def fn(cfg):
        calls.append(cfg)
        os.makedirs(cfg.out_dir, exist_ok=True)
        return {"finished": cfg.steps < 100, "value": np.float32(cfg.lr)}

    cfg = AlignConfig(steps=5, lr=0.5)
    first = run_phase("align", fn, cfg, str(tmp_path), say=lambda m: None)
    assert not first["cached"] and calls[0].resume and calls[0].out_dir == first["out_dir"]
    assert os.path.basename(first["out_dir"]) == f"align-{phase_key(cfg)}"
    rec = json.load(open(os.path.join(first["out_dir"], MARKER)))
    assert rec["log"]["value"] == 0.5 and rec["wall_seconds"] >= 0
    again = run_phase("align", fn, cfg, str(tmp_path), say=lambda m: None)
    assert again["cached"] and len(calls) == 1 and again["value"] == 0.5
    run_phase("align", fn, dataclasses.replace(cfg, steps=6), str(tmp_path), say=lambda m: None)
    assert len(calls) == 2
    # an unfinished phase leaves no record: the next call runs (resumes) it
    run_phase("align", fn, dataclasses.replace(cfg, steps=200), str(tmp_path), say=lambda m: None)
    run_phase("align", fn, dataclasses.replace(cfg, steps=200), str(tmp_path), say=lambda m: None)
    assert len(calls) == 4


@pytest.mark.usefixtures("sample_data")
def test_prepare_is_the_one_data_preparation():
    train, dev, pairs = prepare(Slice(max_products=200, max_train_queries=40, max_dev_queries=20))
    assert len(dev.queries) == 20 and len(train.doc_ids) >= 200 and len(pairs.query_texts) <= 40
    # every dev-judged product stays in the slice
    kept = set(train.doc_ids)
    assert all(d in kept for q in dev.query_ids for d in dev.qrels.get(q, {}))
    from hlm_engine.train.teacher import prepare as old_home
    assert old_home is prepare


def test_encoding_at_another_shard_size_is_reused(tmp_path, tiny_models):
    ids, texts = [f"d{i}" for i in range(50)], [f"product number {i}" for i in range(50)]
    out = str(tmp_path / "enc")
    a = cached_encode(tiny_models["teacher"], texts, out, ids=ids, shard_size=8, show_progress=False)
    stamp = os.stat(os.path.join(out, "manifest.json")).st_mtime_ns
    b = cached_encode(tiny_models["teacher"], texts, out, ids=ids, shard_size=4096, show_progress=False)
    assert np.array_equal(a, b) and os.stat(os.path.join(out, "manifest.json")).st_mtime_ns == stamp
    # an unfinished one resumes with the shard size it was started with
    part = str(tmp_path / "part")
    cached_encode(tiny_models["teacher"], texts, part, ids=ids, shard_size=8, show_progress=False)
    os.remove(os.path.join(part, "manifest.json"))
    os.remove(os.path.join(part, "shards", "00003.npy"))
    c = cached_encode(tiny_models["teacher"], texts, part, ids=ids, shard_size=4096, show_progress=False)
    assert np.array_equal(a, c) and json.load(open(os.path.join(part, "manifest.json")))["shard_size"] == 8
