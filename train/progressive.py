"""Progressive structured pruning toward a target shape: prune a step -> re-align -> repeat (Minitron-style).

The paper's route from a 0.6B student to a 4-layer deployed model removes whole layers and FFN units a
little at a time, re-aligning (ℓ2 to the frozen teacher) after each cut so every step starts from a model
that is again close to the teacher. Each step:
    1. load the parent (the previous step's re-aligned model; step 0 = the student, ℓ2-aligned first when
       it does not yet emit teacher-width vectors),
    2. score it on real calibration queries from the log: Block Influence per layer and FFN unit importance
       (`prune.calibration_stats`), plus the alignment loss with each layer skipped (for comparison),
    3. slice it to the step's (num_layers, ffn_width) — a dense model, no masks — and save it (atomic),
    4. re-align it with the ℓ2 phase for `steps` (all steps share one teacher-target cache),
    5. measure the distance to the teacher on held-out log queries and, optionally, Recall@100 on the
       Home Depot dev split against the teacher's product vectors (recovery = student / teacher).
Optionally the final model (or every step's, for a Pareto table) is refined contrastively.

Resume: a finished step is recorded in steps.json and skipped; an unfinished one reuses its saved pruned
model and continues through the align (or refine) phase's own exact resume.

Layout of out_dir:
    steps.json              atomic: config, teacher dev metrics, one entry per finished step
    cache/                  teacher targets (query log), teacher corpus and dev-query vectors
    step0/align/            the unpruned student aligned first (only when it lacks a teacher-width head)
    step{k}/pruned/         the dense pruned model before re-alignment; step{k}/prune_info.json its scores
    step{k}/align/model/    the re-aligned model: the next step's parent
    step{k}/refine/model/   the contrastively refined model (when asked for)
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np

from hlm_engine.retrieval.eval import recovery
from hlm_engine.io import write_json

from . import prune as P
from .align import AlignConfig, distance, load_queries, train_align
from .common import cache_dir, check_folder, copy_model, load_encoder, write_texts_tsv
from .embed import cached_encode, retrieval_quality
from .runner import Optim, Slice, block, prepare


@dataclass
class ProgressiveConfig(Slice, Optim):
    """The Optim block is the re-alignment's (steps, lr, batch_size, ... of each pruning step's align phase;
    `hlm prune --align-steps/--align-lr` set steps/lr); the Slice block is the dev check's and refine's."""
    student: str = "minilm"
    teacher: str = "mpnet"
    queries_file: str | None = None         # a .tsv with a `query` column; default: the data dir's query log
    out_dir: str = "runs/prune"
    # (num_layers, ffn_width) per step toward the target; ffn_width None keeps each layer's width.
    schedule: list = field(default_factory=lambda: [(4, 1536), (3, 1024), (2, 1024)])
    steps: int = 300                        # re-alignment budget after each pruning step
    final_steps: int | None = None          # ... after the last one (None: steps): the shape that ships gets
    #                                         the long re-alignment, the intermediate shapes only a short one
    initial_align_steps: int | None = None  # aligning an unaligned student first (None: steps)
    batch_size: int = 64
    warmup_steps: int = 25
    max_queries: int | None = 20000         # log queries used for alignment (None = the whole log)
    exclude_queries: str | None = None      # Home Depot splits whose queries leave the log (AlignConfig's)
    holdout: int = 512                      # held-out log queries: distance to the teacher
    extra_texts_file: str | None = None     # more (id, text) rows to re-align on, e.g. ad titles (see align.py)
    extra_targets_dir: str | None = None    # their teacher vectors (an encode_corpus folder)
    align_on_titles: bool = False           # re-align on the dev corpus slice's titles too (needs evaluate):
    #                                         their teacher vectors are already cached for the dev check
    max_length: int | None = 64
    calibration_queries: int = 1024         # real log queries (training part) scoring layers and units
    width_multiple: int = 64                # kept FFN widths are multiples of this (full GEMM tiles)
    skip_loss: bool = True                  # also score layers by the loss when skipped (L extra passes)
    evaluate: bool = False                  # Recall@100 recovery on the dev split after every step
    max_products: int | None = 20000        # dev corpus slice: all judged products + distractors
    #   max_dev_queries: evaluate on a seeded subset of dev queries (None = all; a subset gets its own,
    #   smaller corpus slice, not shared with refine); max_train_queries: refine's training queries
    refine: bool = False                    # contrastive refinement of the final model
    refine_every_step: bool = False         # ... of every step's model (Pareto studies); the chain goes on
    refine_steps: int = 200                 #     from the aligned, unrefined models
    refine_lr: float = 2e-5
    refine_batch_size: int = 32
    stop_after_steps: int | None = None     # stop after this many pruning steps ran in this process
    encode_batch_size: int = 128
    targets_dir: str | None = None          # teacher-target cache of the log (default: out_dir/cache/...;
    #                                         share it with the align phase that used the same log)
    refine_doc_embeddings: str | None = None    # refine against these teacher corpus vectors (default: the
    #                                             dev check's cache) ...
    refine_query_targets_dir: str | None = None  # ... with these teacher train-query vectors as the anchor
    #   model_dir: where the final model is copied when the schedule finishes (None: left in its step folder)


def parse_schedule(text: str) -> list[tuple[int, int | None]]:
    """'4x1536,3x1024,2' -> [(4, 1536), (3, 1024), (2, None)] (no width: keep each layer's FFN width)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            layers, _, width = part.partition("x")
            out.append((int(layers), int(width) if width else None))
        except ValueError:
            raise ValueError(f"bad schedule step {part!r}: expected LAYERSxFFN_WIDTH such as 4x1536") from None
    if not out:
        raise ValueError(f"empty pruning schedule {text!r}")
    return out


def check_schedule(schedule, num_layers: int) -> list[tuple[int, int | None]]:
    """Normalised schedule; layers must not grow and stay within the student's depth, widths positive."""
    steps = [(int(s[0]), None if s[1] is None else int(s[1])) for s in schedule]
    if not steps:
        raise ValueError("empty pruning schedule")
    prev = num_layers
    for k, (n, w) in enumerate(steps, start=1):
        if not 1 <= n <= prev:
            raise ValueError(f"schedule step {k} ({n}x{w}): num_layers must be in [1, {prev}] (the student has "
                             f"{num_layers} layers and a step cannot add layers)")
        if w is not None and w < 1:
            raise ValueError(f"schedule step {k} ({n}x{w}): ffn_width must be positive")
        prev = n
    return steps


def model_shape(enc) -> dict:
    """Layers, per-layer FFN widths, total parameters and transformer-layer parameters (∝ per-token layer
    FLOPs, the compute pruning removes; embeddings are a lookup)."""
    named = list(enc.model.named_parameters())
    return {"num_layers": enc.config.num_layers, "widths": list(enc.config.intermediate_sizes),
            "params": int(sum(p.numel() for _, p in named)),
            "layer_params": int(sum(p.numel() for n, p in named if n.startswith("layers.")))}


class _Queries:
    """The align phase's query selection and teacher targets (the same cache every align run reuses)."""

    def __init__(self, cfg: ProgressiveConfig, teacher_folder: str):
        acfg = _align_cfg(cfg, cfg.student, cfg.out_dir, 1)
        self.texts, self.holdout = load_queries(acfg)
        self.targets = cached_encode(teacher_folder, self.texts, acfg.targets_dir, batch_size=cfg.encode_batch_size,
                                     show_progress=False)
        n = max(1, min(cfg.calibration_queries, len(self.texts) - self.holdout))
        self.calib = slice(self.holdout, self.holdout + n)  # training queries, never the held-out ones

    def distance(self, enc) -> float:
        return distance(enc, enc.tokenize(self.texts[: self.holdout]), self.targets[: self.holdout])


class _DevEval:
    """Recall@100 etc. of a query encoder on the dev split against the teacher's product vectors, and the
    teacher's own numbers (the same corpus slice and cache the refine phase uses)."""

    def __init__(self, cfg: ProgressiveConfig, teacher_folder: str):
        if cfg.max_dev_queries is None:
            train, self.dev, _ = prepare(cfg)
            ids, texts, cache = train.doc_ids, train.doc_texts, "teacher_corpus"
        else:  # a cheaper check: fewer dev queries, so fewer judged products to encode with the teacher
            from .common import choose_queries, corpus_rows, judged_ids, subset_queries
            from .data import load_split, restrict
            dev = load_split("dev", cfg.data_dir)
            dev = subset_queries(dev, choose_queries(len(dev.query_ids), cfg.max_dev_queries, cfg.seed))
            self.dev = restrict(dev, corpus_rows(dev, judged_ids(dev), cfg.max_products, cfg.seed))
            ids, texts, cache = self.dev.doc_ids, self.dev.doc_texts, f"teacher_dev_corpus_{cfg.max_dev_queries}"
        self.doc_ids, self.doc_texts, self.cache = ids, texts, cache_dir(cfg.out_dir, cache)
        self.docs = cached_encode(teacher_folder, texts, self.cache, ids=ids, batch_size=64, show_progress=False)
        tq = cached_encode(teacher_folder, self.dev.queries, cache_dir(cfg.out_dir, f"{cache}_queries"),
                           batch_size=cfg.encode_batch_size, show_progress=False)
        self.teacher = self._score(tq)
        self.products = len(ids)

    def _score(self, q: np.ndarray) -> dict:
        return retrieval_quality(q, self.docs, self.dev.query_ids, self.dev.doc_ids, self.dev.qrels)

    def __call__(self, enc) -> dict:
        m = self._score(enc.encode(self.dev.queries, batch_size=128))
        return {"dev": m, "recovery": recovery(m, self.teacher)}


def _warmup(warmup: int, steps: int) -> int:
    # At most a tenth of a step's budget: a short re-alignment must not spend its whole run warming up.
    return min(warmup, steps // 10)


def _align_cfg(cfg: ProgressiveConfig, student: str, out_dir: str, steps: int) -> AlignConfig:
    optim = block(cfg, Optim) | dict(out_dir=out_dir, model_dir=None, stop_after=None, steps=steps,
                                     warmup_steps=_warmup(cfg.warmup_steps, steps))
    return AlignConfig(student=student, teacher=cfg.teacher, data_dir=cfg.data_dir, queries_file=cfg.queries_file,
                       targets_dir=cfg.targets_dir or cache_dir(cfg.out_dir, "teacher_targets"),
                       max_queries=cfg.max_queries, exclude_queries=cfg.exclude_queries, holdout=cfg.holdout,
                       max_length=cfg.max_length, encode_batch_size=cfg.encode_batch_size,
                       extra_texts_file=cfg.extra_texts_file, extra_targets_dir=cfg.extra_targets_dir, **optim)


def _refine(cfg: ProgressiveConfig, student: str, out_dir: str) -> dict:
    from .refine import RefineConfig, train_refine
    optim = block(cfg, Optim) | dict(out_dir=out_dir, model_dir=None, stop_after=None, steps=cfg.refine_steps,
                                     batch_size=cfg.refine_batch_size, lr=cfg.refine_lr,
                                     warmup_steps=_warmup(20, cfg.refine_steps))
    # The refine corpus is the full slice (every dev-judged product), whatever subset the dev check measures.
    log = train_refine(RefineConfig(
        student=student, teacher=cfg.teacher,
        doc_embeddings=cfg.refine_doc_embeddings or cache_dir(cfg.out_dir, "teacher_corpus"),
        query_targets_dir=cfg.refine_query_targets_dir, max_length=cfg.max_length, evaluate=False,
        encode_batch_size=cfg.encode_batch_size, **(block(cfg, Slice) | dict(max_dev_queries=None) | optim)))
    return {"model": os.path.join(out_dir, "model"), "loss_first10": log["loss_first10"],
            "loss_last10": log["loss_last10"]}


def _measure(enc, queries: _Queries, dev: _DevEval | None) -> dict:
    out = {**model_shape(enc), "distance": queries.distance(enc)}
    if dev is not None:
        out.update(dev(enc))
    return out


def _load_state(cfg: ProgressiveConfig, path: str) -> dict:
    """steps.json of an earlier run of the same schedule (resume), else a fresh state."""
    fresh = {"config": dataclasses.asdict(cfg), "steps": [], "finished": False}
    if not (cfg.resume and os.path.exists(path)):
        return fresh
    with open(path) as f:
        state = json.load(f)
    old = state["config"]
    for key in ("student", "teacher", "calibration_queries", "seed", "max_queries", "holdout", "max_dev_queries",
                "max_products"):
        if old.get(key) != getattr(cfg, key):
            raise ValueError(f"{path}: resuming with {key}={getattr(cfg, key)!r} but the run used {old.get(key)!r}; "
                             "use another out_dir or the original settings")
    for e in state["steps"][1:]:
        k = e["step"]
        if k > len(cfg.schedule) or list(cfg.schedule[k - 1]) != list(e["target"]):
            raise ValueError(f"{path}: step {k} was pruned to {e['target']} but the schedule now has "
                             f"{cfg.schedule[k - 1] if k <= len(cfg.schedule) else 'no such step'}")
    state["config"] = fresh["config"]
    return state


def _wants_refine(cfg: ProgressiveConfig, k: int) -> bool:
    return cfg.refine_every_step or (cfg.refine and k == len(cfg.schedule))


def run_progressive(cfg: ProgressiveConfig) -> dict:
    """Run (or resume) the schedule; returns the steps.json state (entries: shape, scores, metrics, model)."""
    teacher_folder, t_dim = check_folder(cfg.teacher, "teacher")
    student_folder, s_dim = check_folder(cfg.student, "student")
    from hlm_engine.config import load_folder_config
    cfg.schedule = check_schedule(cfg.schedule, load_folder_config(student_folder).num_layers)
    if cfg.steps < 1:
        raise ValueError(f"steps (the re-alignment budget) must be >= 1, got {cfg.steps}")
    os.makedirs(cfg.out_dir, exist_ok=True)
    path = os.path.join(cfg.out_dir, "steps.json")
    state = _load_state(cfg, path)
    queries = _Queries(cfg, teacher_folder)
    dev = _DevEval(cfg, teacher_folder) if cfg.evaluate else None
    if dev is not None:
        state["teacher"] = {"dev": dev.teacher, "products": dev.products}
    if cfg.align_on_titles:
        if dev is None:
            raise ValueError("align_on_titles needs evaluate=True (it aligns on the dev corpus slice's titles)")
        cfg.extra_texts_file = write_texts_tsv(os.path.join(cfg.out_dir, "titles.tsv"), dev.doc_ids, dev.doc_texts)
        cfg.extra_targets_dir = dev.cache
    entries = state["steps"]

    def save():
        state["finished"] = len(entries) == len(cfg.schedule) + 1
        write_json(path, state)

    # Step 0: the unpruned student in the teacher's space.
    if not entries:
        entry = {"step": 0, "name": "step0", "target": None, "aligned_here": s_dim != t_dim}
        parent = student_folder
        if s_dim != t_dim:  # no teacher-width head yet: align the unpruned student first
            d = os.path.join(cfg.out_dir, "step0", "align")
            log = train_align(_align_cfg(cfg, student_folder, d, cfg.initial_align_steps or cfg.steps))
            entry.update(distance_before=log["distance_before"], align_loss_last10=log["loss_last10"])
            parent = os.path.join(d, "model")
        enc = load_encoder(parent, cfg.max_length, "student")
        entry.update(model=parent, **_measure(enc, queries, dev))
        if _wants_refine(cfg, 0):
            entry["refine"] = _refine(cfg, parent, os.path.join(cfg.out_dir, "step0", "refine"))
            entry["refine"].update(_measure(load_encoder(entry["refine"]["model"], cfg.max_length), queries, dev))
        entries.append(entry)
        save()

    ran = 0
    for k, (n_layers, width) in enumerate(cfg.schedule, start=1):
        if k < len(entries):  # finished in an earlier run
            continue
        if cfg.stop_after_steps is not None and ran >= cfg.stop_after_steps:
            break
        parent = entries[k - 1]["model"]
        d = os.path.join(cfg.out_dir, f"step{k}")
        pruned_dir, info_path = os.path.join(d, "pruned"), os.path.join(d, "prune_info.json")
        if cfg.resume and os.path.exists(info_path):  # pruned before the interruption: reuse, don't re-score
            with open(info_path) as f:
                info = json.load(f)
        else:
            info = _prune_step(cfg, parent, queries, n_layers, width, pruned_dir)
            write_json(info_path, info)
        budget = cfg.final_steps if (k == len(cfg.schedule) and cfg.final_steps) else cfg.steps
        log = train_align(_align_cfg(cfg, pruned_dir, os.path.join(d, "align"), budget))
        model = os.path.join(d, "align", "model")
        entry = {"step": k, "name": f"step{k}", "target": [n_layers, width], "parent": parent, **info,
                 "distance_pruned": log["distance_before"], "align_loss_last10": log["loss_last10"], "model": model}
        entry.update(_measure(load_encoder(model, cfg.max_length, "student"), queries, dev))
        if _wants_refine(cfg, k):
            entry["refine"] = _refine(cfg, model, os.path.join(d, "refine"))
            entry["refine"].update(_measure(load_encoder(entry["refine"]["model"], cfg.max_length), queries, dev))
        entries.append(entry)
        save()
        ran += 1
    save()
    last = entries[-1]
    state["final_model"] = last["refine"]["model"] if "refine" in last else last["model"]
    if cfg.model_dir and state["finished"]:
        copy_model(state["final_model"], cfg.model_dir)
    write_json(path, state)
    return state


def _prune_step(cfg: ProgressiveConfig, parent: str, queries: _Queries, n_layers: int, width: int | None,
                out: str) -> dict:
    """Score the parent on the calibration queries, slice it to (n_layers, width), save it; the scores."""
    enc = load_encoder(parent, cfg.max_length, "student")
    texts = queries.texts[queries.calib]
    bi, acts = P.calibration_stats(enc, texts)
    small, info = P.prune_by_scores(enc, bi, acts, n_layers, width, cfg.width_multiple)
    if cfg.skip_loss:
        info["skip_loss"] = P.layer_skip_loss(enc, texts, queries.targets[queries.calib]).tolist()
    info["ffn_stats"] = P.ffn_stats(acts)
    info["parent_shape"] = model_shape(enc)
    small.save_pretrained(out)
    return info
