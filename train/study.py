"""`hlm study`: the HARNESS-LM design-choice study on real data — train, cache and tabulate a grid of cells.

Each cell (see `study_config.Cell`) is a chain of phases ending in a query encoder for the frozen teacher's
product vectors:

    [build qwen3-random] -> align (objective) -> [prune step -> ℓ2 re-align]* -> [refine (InfoNCE)]
    objective "none":       refine from the raw student with a fresh head (direct asymmetric fine-tuning)

and is measured on the Home Depot dev split by exact top-100 search over the teacher's product vectors
(Recall@10/100, nDCG@10; recovery = student / teacher), optionally with both sides truncated to the first
`dim` coordinates and re-normalised (Matryoshka-style). After every cell is trained, all final models and
the teacher are timed side by side in this one process (`study_speed`).

Caching (under the work dir): every phase lives in a folder named by the hash of everything its model
depends on, so cells that share a prefix (the aligned base student that the dim cells, the refine cells and
the pruned cells start from) share it; evaluations and each cell's result are JSON files keyed the same way;
the teacher's product vectors, dev-query vectors, log-query targets and train-query vectors are encoded once
per data slice. A second run with the same config computes nothing and only re-tabulates.

Cost per phase: wall seconds and CPU seconds (time.process_time: user + system time of this process, all
threads — measured, not wall × threads), at `train_threads` torch threads. A cell's cost is the sum over its
chain, including phases it shares with other cells (what the cell would cost alone).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from functools import cached_property

import numpy as np
import torch

from hlm_engine.retrieval.data import data_dir as resolve_data_dir
from hlm_engine.retrieval.eval import recovery
from hlm_engine.io import read_json, write_json

from .study_config import QWEN3_RANDOM, Cell, StudyConfig, stable_hash

def _timed(fn) -> tuple[object, dict]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2),
                 "threads": torch.get_num_threads()}


def _link(target: str, link: str) -> None:
    """Point a phase's private cache folder at the study's shared one (the phases are reused unchanged, and
    they look for their teacher vectors under out_dir/cache/...)."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) and os.readlink(link) == target:
        return
    if os.path.lexists(link):
        raise FileExistsError(f"{link} exists and is not a link to the shared cache {target}")
    os.symlink(target, link)


def count_params(folder: str) -> int:
    """Parameters of a model folder, built on the meta device (no memory, no weights read)."""
    from hlm_engine.config import load_folder_config
    from hlm_engine.models import build_model
    with torch.device("meta"):
        model = build_model(load_folder_config(folder), "torch")
    return int(sum(p.numel() for p in model.parameters()))


def truncate(x: np.ndarray, dim: int) -> np.ndarray:
    """First `dim` coordinates, re-normalised to unit length (Matryoshka truncation); dim 0 = unchanged."""
    if not dim or dim >= x.shape[1]:
        return x
    y = np.ascontiguousarray(x[:, :dim], dtype=np.float32)
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


def build_qwen3_student(cell: Cell, out_dir: str, max_length: int, seed: int) -> None:
    """A Qwen3-architecture student from our config system: random init, the real Qwen3 tokenizer."""
    from hlm_engine import Encoder
    from hlm_engine.config import preset
    from hlm_engine.hub import resolve
    cfg = preset("qwen3-190m", hidden_size=cell.qwen3_hidden, num_layers=cell.qwen3_layers,
                 num_heads=cell.qwen3_heads, num_kv_heads=cell.qwen3_kv_heads, head_dim=cell.qwen3_head_dim,
                 intermediate_sizes=[cell.qwen3_ffn] * cell.qwen3_layers, max_length=max_length)
    cfg = dataclasses.replace(cfg, name=f"qwen3-{cell.qwen3_layers}layer-{cell.qwen3_hidden}-random")
    tok = os.path.join(resolve("qwen3-tokenizer"), "tokenizer.json")
    Encoder.from_config(cfg, tok, backend="torch", dtype=torch.float32, seed=seed).save_pretrained(out_dir)


class Study:
    """One study run over a config; `run()` returns the results dict (also written by the CLI)."""

    def __init__(self, cfg: StudyConfig, work_dir: str, progress: bool = True, remeasure: bool = False):
        self.cfg, self.s = cfg, cfg.settings
        self.work = os.path.abspath(os.path.expanduser(work_dir))
        self.progress, self.remeasure = progress, remeasure
        self.computed: list[str] = []          # what this run had to compute (empty on a fully cached rerun)
        self.data_dir = resolve_data_dir(self.s.data_dir or None)
        self.shared = dict(dataclasses.asdict(self.s), data_dir=self.data_dir or "packaged sample set")
        self.slice_key = stable_hash({**self.s.result_key(), "data_dir": self.shared["data_dir"]})

    # ------------------------------------------------------------------ shared teacher-side work (lazy)
    def _path(self, *parts: str) -> str:
        return os.path.join(self.work, *parts)

    @cached_property
    def teacher(self) -> tuple[str, int]:
        from .common import check_folder
        return check_folder(self.s.teacher, "teacher")

    @cached_property
    def data(self):
        """(train, dev, pairs) of the slice — the very call the refine phase makes, so its corpus matches."""
        from .teacher import TeacherConfig, prepare
        return prepare(TeacherConfig(data_dir=self.data_dir, threshold=self.s.threshold,
                                     max_train_queries=self.s.train_queries, max_dev_queries=self.s.dev_queries,
                                     max_products=self.s.products, seed=self.s.seed))

    def _shared_encode(self, name: str, texts: list[str], out_dir: str, ids=None) -> np.ndarray:
        from .embed import cached_encode
        costs_path = self._path("cache", "costs.json")
        fresh = not os.path.exists(os.path.join(out_dir, "manifest.json"))
        if fresh:
            self.computed.append(f"teacher:{name}")
        vecs, cost = _timed(lambda: cached_encode(self.teacher[0], texts, out_dir, ids=ids, batch_size=128,
                                                  show_progress=self.progress))
        if fresh:
            costs = read_json(costs_path) if os.path.exists(costs_path) else {}
            costs[out_dir] = {"what": name, "rows": len(texts), **cost}
            write_json(costs_path, costs)
        return vecs

    @cached_property
    def corpus_dir(self) -> str:
        if self.s.corpus_cache:
            return os.path.abspath(os.path.expanduser(self.s.corpus_cache))
        from hlm_engine.retrieval.corpus import corpus_checksum
        train = self.data[0]
        return self._path("cache", f"teacher-corpus-{corpus_checksum(train.doc_ids, train.doc_texts)[:16]}")

    @cached_property
    def docs(self) -> np.ndarray:
        train = self.data[0]
        return self._shared_encode("product vectors", train.doc_texts, self.corpus_dir, ids=train.doc_ids)

    @cached_property
    def teacher_dev(self) -> np.ndarray:
        dev = self.data[1]
        return self._shared_encode("dev query vectors", dev.queries,
                                   self._path("cache", f"slice-{self.slice_key}", "teacher-dev-queries"),
                                   ids=dev.query_ids)

    @cached_property
    def log_targets_dir(self) -> str:
        """Teacher vectors of the alignment log (the align phase's `targets_dir`), encoded here once so their
        cost is the study's shared cost, not the first align cell's."""
        from .align import AlignConfig, load_queries
        d = self._path("cache", f"slice-{self.slice_key}", "teacher-log-targets")
        queries, _ = load_queries(AlignConfig(data_dir=self.data_dir, max_queries=self.s.log_queries,
                                              holdout=self.s.holdout, seed=self.s.seed))
        self._shared_encode("log query targets", queries, d)
        return d

    @cached_property
    def train_query_dir(self) -> str:
        """Teacher vectors of the refine phase's training queries (used to mine its hard negatives)."""
        d = self._path("cache", f"slice-{self.slice_key}", "teacher-train-queries")
        self._shared_encode("train query vectors", self.data[2].query_texts, d)
        return d

    # ------------------------------------------------------------------ phases
    def _phase(self, kind: str, key: dict, run, needs=()) -> dict:
        """Run `run(folder)` once for this key (its model lands in folder/model); the cached record after.
        `needs`: shared teacher-side caches to fill first, outside the phase's timing (their cost is shared)."""
        h = stable_hash(key)
        d = self._path(kind, h)
        rec_path = os.path.join(d, "phase.json")
        if os.path.exists(rec_path):
            return read_json(rec_path)
        self.computed.append(f"{kind}:{h}")
        for name in needs:
            getattr(self, name)
        _, cost = _timed(lambda: run(d))
        # A finished phase never resumes: its optimizer checkpoints (3x the model) only cost disk.
        for root, dirs, _ in os.walk(d):
            if "checkpoint" in dirs:
                shutil.rmtree(os.path.join(root, "checkpoint"))
                dirs.remove("checkpoint")
        from hlm_engine.weights import weights_checksum
        model = os.path.join(d, "model")
        rec = {"phase": kind, "key": h, "settings": key, "model": model, "checksum": weights_checksum(model),
               **cost}
        write_json(rec_path, rec)
        return rec

    def _student(self, c: Cell) -> tuple[str, dict, dict | None]:
        """(student folder or name, its identity for cache keys, build record or None)."""
        if c.student != QWEN3_RANDOM:
            return c.student, {"student": c.student}, None
        spec = {k: v for k, v in dataclasses.asdict(c).items() if k.startswith("qwen3_")}
        spec.update(max_length=self.s.max_length, seed=self.s.seed)
        rec = self._phase("build", spec, lambda d: build_qwen3_student(c, os.path.join(d, "model"),
                                                                        self.s.max_length, self.s.seed))
        return rec["model"], {"student": QWEN3_RANDOM, **spec}, rec

    def _align(self, c: Cell, student: str, ident: dict) -> dict:
        from .align import AlignConfig, train_align
        key = {**ident, "teacher": self.s.teacher, "objective": c.objective, "steps": c.align_steps,
               "lr": c.align_lr, "batch_size": c.align_batch_size, "data_dir": self.shared["data_dir"],
               "log_queries": self.s.log_queries, "holdout": self.s.holdout, "max_length": self.s.max_length,
               "seed": self.s.seed}

        def run(d):
            train_align(AlignConfig(student=student, teacher=self.teacher[0], data_dir=self.data_dir,
                                    targets_dir=self.log_targets_dir, out_dir=d, max_queries=self.s.log_queries,
                                    holdout=self.s.holdout, max_length=self.s.max_length, loss=c.objective,
                                    steps=c.align_steps, batch_size=c.align_batch_size, lr=c.align_lr,
                                    warmup_steps=min(25, c.align_steps // 10), seed=self.s.seed, resume=True))
        return self._phase("align", key, run, needs=("log_targets_dir",))

    def _prune_step(self, c: Cell, parent: dict, target: tuple) -> dict:
        """One progressive step (score -> slice -> ℓ2 re-align) as its own cached phase, so schedules that
        share a prefix share its steps whatever order the cells run in."""
        from .progressive import ProgressiveConfig, run_progressive
        key = {"parent": parent["key"], "target": list(target), "align_steps": c.prune_align_steps,
               "lr": c.align_lr, "batch_size": c.align_batch_size,
               "calibration_queries": self.s.calibration_queries}

        def run(d):
            _link(self.log_targets_dir, os.path.join(d, "cache", "teacher_targets"))
            state = run_progressive(ProgressiveConfig(
                student=parent["model"], teacher=self.teacher[0], data_dir=self.data_dir, out_dir=d,
                schedule=[target], align_steps=c.prune_align_steps, align_lr=c.align_lr,
                batch_size=c.align_batch_size, max_queries=self.s.log_queries, holdout=self.s.holdout,
                max_length=self.s.max_length, calibration_queries=self.s.calibration_queries, skip_loss=False,
                evaluate=False, seed=self.s.seed, resume=True))
            _link(state["steps"][1]["model"], os.path.join(d, "model"))
        return self._phase("prune", key, run, needs=("log_targets_dir",))

    def _refine(self, c: Cell, start: str, start_key: dict, direct: bool) -> dict:
        from .refine import RefineConfig, train_refine
        key = {"start": start_key, "teacher": self.s.teacher, "steps": c.refine_steps, "lr": c.refine_lr,
               "batch_size": c.refine_batch_size, "num_negatives": c.num_negatives, "direct": direct,
               "align_weight": 0.0 if direct else c.refine_align_weight,
               "slice": self.slice_key}

        def run(d):
            _link(self.train_query_dir, os.path.join(d, "cache", "teacher_train_queries"))
            train_refine(RefineConfig(
                student=start, teacher=self.teacher[0], doc_embeddings=self.corpus_dir, data_dir=self.data_dir,
                out_dir=d, threshold=self.s.threshold, max_train_queries=self.s.train_queries,
                max_dev_queries=self.s.dev_queries, max_products=self.s.products, max_length=self.s.max_length,
                num_negatives=c.num_negatives, steps=c.refine_steps, batch_size=c.refine_batch_size,
                lr=c.refine_lr, warmup_steps=min(20, c.refine_steps // 10), seed=self.s.seed, resume=True,
                evaluate=False,
                # A fresh 384->768 head next to a pretrained body needs a far larger step (as in the demo).
                head_lr_mult=50.0 if direct else 1.0,
                # The baseline has no alignment at all, so no ℓ2 anchor to the teacher's query vectors either.
                align_weight=0.0 if direct else c.refine_align_weight))
        return self._phase("refine", key, run, needs=("docs", "train_query_dir"))

    def chain(self, c: Cell) -> list[tuple[str, dict]]:
        """Train (or load from cache) every phase of a cell: [(label, phase record), ...]."""
        student, ident, built = self._student(c)
        out = [("build", built)] if built else []
        if c.objective == "none":
            return out + [(f"direct fine-tune ({c.refine_steps} steps, {c.num_negatives} negatives)",
                           self._refine(c, student, ident, direct=True))]
        rec = self._align(c, student, ident)
        out.append((f"align ({c.objective}, {c.align_steps} steps, lr {c.align_lr:g})", rec))
        if c.prune:
            from .progressive import parse_schedule
            for n, w in parse_schedule(c.prune):
                rec = self._prune_step(c, rec, (n, w))
                out.append((f"prune {n}x{w if w else 'all'} (+{c.prune_align_steps} align steps)", rec))
        if c.refine:
            out.append((f"refine ({c.refine_steps} steps, {c.num_negatives} negatives)",
                        self._refine(c, rec["model"], {"phase": rec["key"]}, direct=False)))
        return out

    # ------------------------------------------------------------------ evaluation
    def _eval(self, key: dict, run) -> dict:
        path = self._path("evals", stable_hash({**key, "slice": self.slice_key}) + ".json")
        if os.path.exists(path):
            return read_json(path)
        self.computed.append(f"eval:{os.path.basename(path)}")
        out, cost = _timed(run)
        out = {**out, "eval_cost": cost}
        write_json(path, out)
        return out

    def teacher_quality(self, dim: int) -> dict:
        from .embed import retrieval_quality

        def run():
            dev = self.data[1]
            m = retrieval_quality(truncate(self.teacher_dev, dim), truncate(self.docs, dim), dev.query_ids,
                                  dev.doc_ids, dev.qrels, self.s.threshold)
            return {"metrics": m, "products": len(self.data[0].doc_ids)}
        return self._eval({"teacher": self.s.teacher, "dim": dim}, run)

    def quality(self, rec: dict, dim: int) -> dict:
        from .common import load_encoder
        from .embed import retrieval_quality

        def run():
            enc = load_encoder(rec["model"], self.s.max_length, "student")
            t_dim = self.teacher[1]
            if enc.dim != t_dim:
                raise ValueError(f"{rec['model']} emits {enc.dim}-d vectors, the teacher's index is {t_dim}-d")
            dev = self.data[1]
            q = enc.encode(dev.queries, batch_size=128, dim=dim or None)
            return {"metrics": retrieval_quality(q, truncate(self.docs, dim), dev.query_ids, dev.doc_ids,
                                                 dev.qrels, self.s.threshold)}
        return self._eval({"model": rec["checksum"], "dim": dim}, run)

    # ------------------------------------------------------------------ cells
    def cell_path(self, c: Cell) -> str:
        return self._path("cells", stable_hash({"cell": c.training_key(), "dim": c.dim,
                                                 "shared": self.s.result_key(), "data": self.shared["data_dir"]})
                          + ".json")

    def run_cell(self, c: Cell) -> dict:
        # Cells with the same settings share one result (e.g. a step-count cell set to the base's steps by
        # --set); each keeps its own name and axis in the table.
        label = {"name": c.name, "axis": c.axis, "settings": dataclasses.asdict(c)}
        path = self.cell_path(c)
        if os.path.exists(path):
            cached = read_json(path)
            if os.path.isdir(cached["model"]):  # else its phase folders were deleted: rebuild them
                return {**cached, **label}
        if c.dim and c.dim > self.teacher[1]:
            raise ValueError(f"cell {c.name!r}: dim {c.dim} exceeds the teacher's width {self.teacher[1]}")
        chain = self.chain(c)
        teacher_full = self.teacher_quality(0)["metrics"]
        teacher_dim = self.teacher_quality(c.dim)["metrics"] if c.dim else teacher_full
        phases = []
        for label, rec in chain:
            entry = {"label": label, "phase": rec["phase"], "key": rec["key"], "wall_s": rec["wall_s"],
                     "cpu_s": rec["cpu_s"], "threads": rec["threads"]}
            if rec["phase"] != "build":
                m = self.quality(rec, c.dim)["metrics"]
                entry.update(metrics=m, recovery=recovery(m, teacher_full))
            phases.append(entry)
        final = chain[-1][1]
        m = phases[-1]["metrics"]
        out = {"name": c.name, "axis": c.axis, "settings": dataclasses.asdict(c), "model": final["model"],
               "checksum": final["checksum"], "params": count_params(final["model"]), "dim": c.dim or self.teacher[1],
               "metrics": m, "recovery": recovery(m, teacher_full), "recovery_same_dim": recovery(m, teacher_dim),
               "teacher_same_dim": teacher_dim, "phases": phases,
               "train_wall_s": round(sum(p["wall_s"] for p in phases), 2),
               "train_cpu_s": round(sum(p["cpu_s"] for p in phases), 2)}
        write_json(path, out)
        return out

    # ------------------------------------------------------------------ the whole study
    def run(self) -> dict:
        from tqdm import tqdm
        from .study_speed import cached_speed
        before = torch.get_num_threads()
        if self.s.train_threads:
            torch.set_num_threads(self.s.train_threads)
        t0 = time.perf_counter()
        try:
            cells = []
            for c in tqdm(self.cfg.cells, desc="study", unit="cell", disable=not self.progress):
                cells.append(self.run_cell(c))
            from hlm_engine.retrieval.corpus import model_identity
            teacher_folder = self.teacher[0]
            t_sum = model_identity(teacher_folder)["checksum"]
            t_eval = self.teacher_quality(0)
            teacher = {"name": os.path.basename(teacher_folder.rstrip("/")), "metrics": t_eval["metrics"],
                       "products": t_eval["products"], "params": count_params(teacher_folder), "checksum": t_sum}
            models = {"teacher": (teacher_folder, t_sum)} | {c["name"]: (c["model"], c["checksum"]) for c in cells}
            speed = cached_speed(self, models)
        finally:
            torch.set_num_threads(before)
        teacher["speed"] = speed["models"][t_sum]
        for c in cells:
            c["speed"] = speed["models"][c["checksum"]]
        costs_path = self._path("cache", "costs.json")
        return {"config": self.cfg.path, "settings": self.shared, "teacher": teacher, "cells": cells,
                "speed_settings": speed["settings"], "speed_stamp": speed["stamp"],
                "shared_costs": read_json(costs_path) if os.path.exists(costs_path) else {},
                "computed_this_run": self.computed, "seconds_this_run": round(time.perf_counter() - t0, 1)}
