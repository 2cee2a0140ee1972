"""`hlm study`: the HARNESS-LM design-choice study on real data — train, cache and tabulate a grid of cells.

Each cell (see `study_config.Cell`) is a chain of phases ending in a query encoder for the frozen teacher's
product vectors:

    [build qwen3-random] -> align (objective) -> [prune step -> ℓ2 re-align]* -> [refine (InfoNCE)]
    objective "none":       refine from the raw student with a fresh head (direct asymmetric fine-tuning)

and is measured on the Home Depot dev split by exact top-100 search over the teacher's product vectors
(Recall@10/100, nDCG@10; recovery = student / teacher), optionally with both sides truncated to the first
`dim` coordinates and re-normalised (Matryoshka-style). After every cell is trained, all final models and
the teacher are timed side by side in this one process (`study_speed`).

Caching (under the work dir): every phase runs through the phase runner (train/runner.py), in a folder keyed
by the hash of its config, whose student is the previous phase's model folder, so cells that share a prefix
(the aligned base student that the dim cells, the refine cells and the pruned cells start from) share it; evaluations and each cell's result are JSON files keyed the same way;
the teacher's product vectors, dev-query vectors, log-query targets and train-query vectors are encoded once
per data slice. A second run with the same config computes nothing and only re-tabulates.

Cost per phase: wall seconds and CPU seconds (time.process_time: user + system time of this process, all
threads — measured, not wall × threads), at `train_threads` torch threads. A cell's cost is the sum over its
chain, including phases it shares with other cells (what the cell would cost alone).
"""
from __future__ import annotations

import dataclasses
import os
import time
from functools import cached_property

import numpy as np
import torch

from hlm_engine.retrieval.data import data_dir as resolve_data_dir
from hlm_engine.retrieval.eval import recovery
from hlm_engine.io import read_json, write_json

from .runner import Slice, block, cached, phase_key, prepare, run_phase
from .study_config import QWEN3_RANDOM, Cell, StudyConfig, stable_hash

def _timed(fn) -> tuple[object, dict]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2),
                 "threads": torch.get_num_threads()}


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


@dataclasses.dataclass
class QwenBuild:
    """The 'build' phase's config: a random-init Qwen3-architecture student (the cell's qwen3_* fields)."""
    qwen3_layers: int
    qwen3_hidden: int
    qwen3_heads: int
    qwen3_kv_heads: int
    qwen3_head_dim: int
    qwen3_ffn: int
    max_length: int
    seed: int
    out_dir: str = ""


def build_qwen3_student(b: QwenBuild) -> dict:
    """A Qwen3-architecture student from our config system: random init, the real Qwen3 tokenizer; saved
    to out_dir/model."""
    from hlm_engine import Encoder
    from hlm_engine.config import preset
    from hlm_engine.hub import resolve
    cfg = preset("qwen3-190m", hidden_size=b.qwen3_hidden, num_layers=b.qwen3_layers,
                 num_heads=b.qwen3_heads, num_kv_heads=b.qwen3_kv_heads, head_dim=b.qwen3_head_dim,
                 intermediate_sizes=[b.qwen3_ffn] * b.qwen3_layers, max_length=b.max_length)
    cfg = dataclasses.replace(cfg, name=f"qwen3-{b.qwen3_layers}layer-{b.qwen3_hidden}-random")
    tok = os.path.join(resolve("qwen3-tokenizer"), "tokenizer.json")
    Encoder.from_config(cfg, tok, backend="torch", dtype=torch.float32, seed=b.seed).save_pretrained(
        os.path.join(b.out_dir, "model"))
    return {"finished": True}


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
        return prepare(self.slice)

    @property
    def slice(self) -> Slice:
        return Slice(data_dir=self.data_dir, threshold=self.s.threshold, max_train_queries=self.s.train_queries,
                     max_dev_queries=self.s.dev_queries, max_products=self.s.products, seed=self.s.seed)

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

    @property
    def _log_targets_path(self) -> str:
        return self._path("cache", f"slice-{self.slice_key}", "teacher-log-targets")

    @property
    def _train_query_path(self) -> str:
        return self._path("cache", f"slice-{self.slice_key}", "teacher-train-queries")

    @cached_property
    def log_targets_dir(self) -> str:
        """Teacher vectors of the alignment log (the align phase's `targets_dir`), encoded here once so their
        cost is the study's shared cost, not the first align cell's."""
        from .align import AlignConfig, load_queries
        d = self._log_targets_path
        queries, _ = load_queries(AlignConfig(data_dir=self.data_dir, max_queries=self.s.log_queries,
                                              holdout=self.s.holdout, seed=self.s.seed,
                                              exclude_queries=self.s.exclude_queries or None))
        self._shared_encode("log query targets", queries, d)
        return d

    @cached_property
    def train_query_dir(self) -> str:
        """Teacher vectors of the refine phase's training queries (used to mine its hard negatives)."""
        d = self._train_query_path
        self._shared_encode("train query vectors", self.data[2].query_texts, d)
        return d

    # ------------------------------------------------------------------ phases
    def _phase(self, kind: str, fn, cfg, needs=()) -> dict:
        """One phase through the runner (cached under work/phases in a folder keyed by its config); the
        study's record of it. `needs`: shared teacher-side caches to fill first, outside the phase's timing
        (their cost is shared)."""
        root = self._path("phases")
        if cached(root, kind, cfg) is None:
            self.computed.append(f"{kind}:{phase_key(cfg)}")
            for name in needs:
                getattr(self, name)
        log = run_phase(kind, fn, cfg, root, say=lambda m: None, keep_checkpoints=False)
        from hlm_engine.weights import weights_checksum
        model = log.get("final_model") or os.path.join(log["out_dir"], "model")
        return {"phase": kind, "key": phase_key(cfg), "model": model, "checksum": weights_checksum(model),
                "wall_s": log["wall_seconds"], "cpu_s": log["cpu_seconds"], "threads": log["threads"]}

    def _student(self, c: Cell) -> tuple[str, dict | None]:
        """(student folder or name, build record or None)."""
        if c.student != QWEN3_RANDOM:
            return c.student, None
        spec = QwenBuild(**{k: v for k, v in dataclasses.asdict(c).items() if k.startswith("qwen3_")},
                         max_length=self.s.max_length, seed=self.s.seed)
        rec = self._phase("build", build_qwen3_student, spec)
        return rec["model"], rec

    @cached_property
    def titles_file(self) -> str:
        """Every product title as an (id, text) TSV: alignment text whose teacher vectors are the corpus's."""
        from .common import write_texts_tsv
        train = self.data[0]
        return write_texts_tsv(self._path("cache", f"slice-{self.slice_key}", "titles.tsv"), train.doc_ids,
                               train.doc_texts)

    def _align(self, c: Cell, student: str) -> dict:
        from .align import AlignConfig, train_align
        titles = dict(extra_texts_file=self.titles_file, extra_targets_dir=self.corpus_dir) if c.align_on_titles \
            else {}
        return self._phase("align", train_align, AlignConfig(
            student=student, teacher=self.teacher[0], data_dir=self.data_dir,
            targets_dir=self._log_targets_path, max_queries=self.s.log_queries, holdout=self.s.holdout,
            exclude_queries=self.s.exclude_queries or None,
            max_length=self.s.max_length, loss=c.objective, steps=c.align_steps, batch_size=c.align_batch_size,
            lr=c.align_lr, warmup_steps=min(25, c.align_steps // 10), seed=self.s.seed, **titles),
            needs=("log_targets_dir", "docs") if c.align_on_titles else ("log_targets_dir",))

    def _prune_step(self, c: Cell, parent: dict, target: tuple) -> dict:
        """One progressive step (score -> slice -> ℓ2 re-align) as its own cached phase, so schedules that
        share a prefix share its steps whatever order the cells run in."""
        from .progressive import ProgressiveConfig, run_progressive
        return self._phase("prune", run_progressive, ProgressiveConfig(
            student=parent["model"], teacher=self.teacher[0], data_dir=self.data_dir, schedule=[target],
            steps=c.prune_align_steps, lr=c.align_lr, batch_size=c.align_batch_size, max_queries=self.s.log_queries,
            holdout=self.s.holdout, exclude_queries=self.s.exclude_queries or None, max_length=self.s.max_length, calibration_queries=self.s.calibration_queries,
            skip_loss=False, evaluate=False, seed=self.s.seed, targets_dir=self._log_targets_path),
            needs=("log_targets_dir",))

    def _refine(self, c: Cell, start: str, direct: bool) -> dict:
        from .refine import RefineConfig, train_refine
        return self._phase("refine", train_refine, RefineConfig(
            student=start, teacher=self.teacher[0], doc_embeddings=self.corpus_dir,
            query_targets_dir=self._train_query_path, max_length=self.s.max_length, num_negatives=c.num_negatives,
            steps=c.refine_steps, batch_size=c.refine_batch_size, lr=c.refine_lr,
            warmup_steps=min(20, c.refine_steps // 10), evaluate=False,
            # A fresh 384->768 head next to a pretrained body needs a far larger step (as in the demo).
            head_lr_mult=50.0 if direct else 1.0,
            # The baseline has no alignment at all, so no ℓ2 anchor to the teacher's query vectors either.
            align_weight=0.0 if direct else c.refine_align_weight, **block(self.slice, Slice)),
            needs=("docs", "train_query_dir"))

    def chain(self, c: Cell) -> list[tuple[str, dict]]:
        """Train (or load from cache) every phase of a cell: [(label, phase record), ...]."""
        student, built = self._student(c)
        out = [("build", built)] if built else []
        if c.objective == "none":
            return out + [(f"direct fine-tune ({c.refine_steps} steps, {c.num_negatives} negatives)",
                           self._refine(c, student, direct=True))]
        rec = self._align(c, student)
        out.append((f"align ({c.objective}, {c.align_steps} steps, lr {c.align_lr:g})", rec))
        if c.prune:
            from .progressive import parse_schedule
            for n, w in parse_schedule(c.prune):
                rec = self._prune_step(c, rec, (n, w))
                out.append((f"prune {n}x{w if w else 'all'} (+{c.prune_align_steps} align steps)", rec))
        if c.refine:
            out.append((f"refine ({c.refine_steps} steps, {c.num_negatives} negatives)",
                        self._refine(c, rec["model"], direct=False)))
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
            hit = read_json(path)
            if os.path.isdir(hit["model"]):  # else its phase folders were deleted: rebuild them
                return {**hit, **label}
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
