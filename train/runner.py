"""One phase runner: the blocks every phase config shares, the one data preparation, config -> cached result.

Every phase config (teacher, align, refine, prune; the baseline is a refine config) is a flat dataclass built
from two shared blocks plus its own fields:

    Optim   out_dir, steps, batch_size, lr, warmup_steps, weight_decay, seed, save_every, resume, stop_after,
            model_dir: what the training loop (`loop.train`) reads
    Slice   data_dir, threshold, max_train_queries, max_dev_queries, max_products, seed: what `prepare` reads

A phase may give a block field its own default (align's batch is 64, refine's 32) by declaring it again.

    log = run_phase("align", train_align, AlignConfig(...), root="runs/x/phases")

runs `train_align` with out_dir = root/align-<key> and resume=True, where key = the first 12 hex digits of
sha256 over the config's fields (`phase_key`; the fields that only say where or how often to write are left
out), and records the result in phase.json there. A second call with an equal config returns that record
without running anything; a changed setting gets a fresh folder; an interrupted phase resumes from its own
checkpoint (the training loop's exact resume, the encodings' shards). Paths of earlier phases' outputs are
config fields, so a phase's key changes when anything upstream does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from hlm_engine.io import sha256_json, write_json

from .common import choose_queries, corpus_rows, judged_ids, subset_queries
from .data import DEFAULT_THRESHOLD, build_pairs, load_split, restrict


@dataclass
class Optim:
    """The training loop's block: where the run lives, the optimiser and schedule, checkpoints and resume."""
    out_dir: str = "runs/phase"
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0
    save_every: int = 100
    resume: bool = False
    stop_after: int | None = None       # stop (checkpointed) once this many steps ran in this process
    model_dir: str | None = None        # where the finished model goes (default: out_dir/model)


@dataclass
class Slice:
    """The Home Depot data block: which data, which queries and which products (`prepare`)."""
    data_dir: str | None = None
    threshold: float = DEFAULT_THRESHOLD   # positives: relevance >= threshold
    max_train_queries: int | None = None   # None = all train queries with a positive
    max_dev_queries: int | None = None     # dev queries measured (seeded subset; None = all)
    max_products: int | None = None        # corpus slice: judged products + distractors (None = all)
    seed: int = 0


def block(cfg, cls) -> dict:
    """The fields of block `cls` (Optim or Slice) as set in `cfg`: hand a phase's block to a child phase."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}


def prepare(cfg):
    """(train split over the corpus slice, dev split over it, training pairs) of a Slice config; raises
    before any model work on bad input. The one data preparation of every phase and orchestrator."""
    train = load_split("train", cfg.data_dir)
    dev = load_split("dev", cfg.data_dir)
    dev = subset_queries(dev, choose_queries(len(dev.query_ids), cfg.max_dev_queries, cfg.seed))
    train = subset_queries(train, choose_queries(len(train.query_ids), cfg.max_train_queries, cfg.seed))
    # The slice keeps every train positive and every dev-judged product, so neither training nor the dev
    # metrics lose a relevant item; random distractors fill it up to max_products.
    positives = {d for rel in train.qrels.values() for d, r in rel.items() if r >= cfg.threshold}
    rows = corpus_rows(train, positives | judged_ids(dev), cfg.max_products, cfg.seed)
    train, dev = restrict(train, rows), restrict(dev, rows)
    return train, dev, build_pairs(train, cfg.threshold)


# ---------------------------------------------------------------------------------------------- the cache
# Fields that say where to write and how often, not what is computed: not part of the key.
VOLATILE = frozenset({"out_dir", "model_dir", "resume", "stop_after", "stop_after_steps", "save_every"})
MARKER = "phase.json"


def phase_key(cfg) -> str:
    """Stable 12-hex-digit hash of a phase config's result-bearing fields."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in VOLATILE}
    return sha256_json({"phase": type(cfg).__name__, **fields}, 12)


def phase_dir(root: str, name: str, cfg) -> str:
    return os.path.join(root, f"{name}-{phase_key(cfg)}")


def cached(root: str, name: str, cfg) -> dict | None:
    """The record of a finished phase with this config (phase.json), else None."""
    p = os.path.join(phase_dir(root, name, cfg), MARKER)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def run_phase(name: str, fn: Callable, cfg, root: str, say: Callable[[str], None] = print,
              keep_checkpoints: bool = True) -> dict:
    """fn(cfg with out_dir set, resume on) once per config. Returns fn's log plus out_dir, wall_seconds,
    cpu_seconds (process time, all threads), threads and cached. keep_checkpoints=False deletes a finished
    phase's optimizer checkpoints (3x the model on disk; a finished phase never resumes)."""
    out = phase_dir(root, name, cfg)
    rec = cached(root, name, cfg)
    if rec is not None:
        say(f"{name}: cached ({out})")
        return dict(rec["log"], out_dir=out, cached=True,
                    **{k: rec.get(k) for k in ("wall_seconds", "cpu_seconds", "threads")})
    say(f"{name} ... ({out})")
    kw = {"out_dir": out} | ({"resume": True} if "resume" in {f.name for f in dataclasses.fields(cfg)} else {})
    cfg = dataclasses.replace(cfg, **kw)
    t, c = time.perf_counter(), time.process_time()
    log = fn(cfg)
    cost = {"wall_seconds": round(time.perf_counter() - t, 1),  # this process's share, with encodings and set-up
            "cpu_seconds": round(time.process_time() - c, 1), "threads": torch.get_num_threads()}
    log = log if log is not None else {}
    if log.get("finished", True):
        if not keep_checkpoints:
            for d, dirs, _ in os.walk(out):
                if "checkpoint" in dirs:
                    shutil.rmtree(os.path.join(d, "checkpoint"))
                    dirs.remove("checkpoint")
        write_json(os.path.join(out, MARKER), {"name": name, "key": phase_key(cfg), **cost,
                                               "config": dataclasses.asdict(cfg), "log": _jsonable(log)})
        say(f"{name}: done in {cost['wall_seconds']:.0f} s")
    return dict(log, out_dir=out, cached=False, **cost)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
