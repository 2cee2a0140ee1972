"""Phase 2 — align the student's query embeddings to the frozen teacher's (the ℓ2 query-tower phase).

Teacher targets f_T(q) for the unlabeled query log are encoded once into a resumable cache; the student
regresses onto them with `alignment_loss`. A student narrower than the teacher gets a linear head
(hidden → teacher width) folded into the model, initialised by least squares from the off-the-shelf
student's pooled features to the targets (ridge, on up to 4,096 training queries) so alignment starts
from the best linear map instead of noise. The saved student then emits teacher-space vectors and carries
`hlm_alignment.json` naming the teacher (and its weight checksum) whose index it may query.

Extra alignment text (`extra_texts_file`, a TSV with `id` and `text` columns): more (text, f_T(text))
pairs regressed alongside the log, typically the ad titles themselves, whose teacher vectors the index
build already computed (`extra_targets_dir` = that corpus-embeddings folder), so they cost no teacher
encoding. Measured on Home Depot: the student overfits an 8k-query log (train ‖s−t‖² 0.42 vs holdout
0.62), and more in-domain text is the cheapest cure. The holdout stays log queries only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from hlm_engine.retrieval.data import load_homedepot, load_query_log, read_tsv
from hlm_engine.io import write_json
from hlm_engine.models.packing import pack
from hlm_engine.weights import weights_checksum

from . import distributed as dist_utils
from . import loop
from .common import attach_projection, cache_dir, check_folder, load_encoder, resume_or
from .embed import cached_encode
from .losses import ALIGN_LOSSES, alignment_loss
from .runner import Optim


@dataclass
class AlignConfig(Optim):
    student: str = "minilm"
    teacher: str = "mpnet"
    data_dir: str | None = None
    queries_file: str | None = None        # a .tsv with a `query` column; default: the data dir's query log
    targets_dir: str | None = None         # teacher-target cache (default: out_dir/cache/teacher_targets)
    out_dir: str = "runs/align"
    max_queries: int | None = None         # None = the whole log
    exclude_queries: str | None = None     # Home Depot splits whose query texts leave the log ("dev": the log
    #                                        holds every dev query, so measuring on dev needs them out)
    holdout: int = 512                     # log queries kept out of training (at most a fifth of the log)
    max_length: int | None = 64
    loss: str = "l2"
    proj_init: str = "lstsq"               # lstsq | random
    steps: int = 500
    batch_size: int = 64
    warmup_steps: int = 25
    encode_batch_size: int = 128
    extra_texts_file: str | None = None    # TSV (id, text) of more texts to align on, e.g. the ad titles;
    #                                        several: comma-separated, each with its own targets folder
    extra_targets_dir: str | None = None   # their teacher vectors (an encode_corpus folder; computed if absent)
    eval_every: int = 0                    # dev-split quality every N steps (the quality-vs-steps curve)
    eval_corpus_dir: str | None = None     # ... against these teacher corpus vectors (an encode_corpus folder)
    eval_dev_queries: int | None = None    # ... on a seeded subset of the dev queries (None = all)


def load_queries(cfg: AlignConfig) -> tuple[list[str], int]:
    """(de-duplicated non-empty log queries in seeded order, holdout size): at most max_queries for training
    after the first `holdout` ones, which are kept aside to measure the distance to the teacher."""
    raw = read_tsv(cfg.queries_file, ["query"])["query"] if cfg.queries_file else load_query_log(cfg.data_dir)
    drop = set()
    for split in (cfg.exclude_queries or "").split(","):
        if split.strip():
            drop |= {" ".join(q.lower().split()) for q in load_homedepot(split.strip(), cfg.data_dir).queries}
    seen, qs = set(), []
    for q in raw:
        t = q.strip()
        if t and t not in seen and " ".join(t.lower().split()) not in drop:
            seen.add(t)
            qs.append(t)
    if len(qs) < 2:
        raise ValueError(f"query log has {len(qs)} usable queries: nothing to align on")
    holdout = max(1, min(cfg.holdout, len(qs) // 5))
    order = np.random.default_rng([cfg.seed, 3]).permutation(len(qs))
    n = len(qs) if cfg.max_queries is None else min(len(qs), cfg.max_queries + holdout)
    return [qs[i] for i in order[:n]], holdout


def _extras(cfg: AlignConfig) -> list[tuple[dict, str | None]]:
    """[(TSV columns id/text, its targets folder or None)] of the extra alignment texts, read up front."""
    if not cfg.extra_texts_file:
        return []
    files = [f.strip() for f in cfg.extra_texts_file.split(",") if f.strip()]
    dirs = [d.strip() or None for d in cfg.extra_targets_dir.split(",")] if cfg.extra_targets_dir else []
    if len(dirs) > len(files) or (dirs and len(dirs) != len(files)):
        raise ValueError(f"{len(files)} extra text file(s) but {len(dirs)} targets folder(s): give one per file")
    out = []
    for k, f in enumerate(files):
        rows = read_tsv(f, ["id", "text"])
        if not rows["text"]:
            raise ValueError(f"{f}: no rows")
        out.append((rows, dirs[k] if dirs else None))
    return out


def dev_probe(cfg: AlignConfig):
    """(step -> dev metrics) of the encoder being trained, or None: the curve of quality against steps."""
    if not cfg.eval_every:
        return None
    if not cfg.eval_corpus_dir:
        raise ValueError("eval_every needs eval_corpus_dir (the teacher's corpus vectors to search)")
    from hlm_engine.retrieval.corpus import load_embeddings

    from .common import choose_queries, subset_queries
    from .data import DEFAULT_THRESHOLD, load_split, restrict
    from .embed import retrieval_quality
    doc_ids, docs = load_embeddings(cfg.eval_corpus_dir)
    dev = load_split("dev", cfg.data_dir)
    dev = subset_queries(dev, choose_queries(len(dev.query_ids), cfg.eval_dev_queries, cfg.seed))
    row = {d: i for i, d in enumerate(dev.doc_ids)}
    missing = [d for d in doc_ids if d not in row]
    if missing:
        raise ValueError(f"{cfg.eval_corpus_dir}: {len(missing)} ids not in the product corpus, e.g. {missing[0]!r}")
    dev = restrict(dev, np.array([row[d] for d in doc_ids]))

    def probe(enc) -> dict:
        was = enc.model.training
        enc.model.eval()
        q = enc.encode(dev.queries, batch_size=cfg.encode_batch_size)
        enc.model.train(was)
        return {"main": retrieval_quality(q, docs, dev.query_ids, dev.doc_ids, dev.qrels, DEFAULT_THRESHOLD),
                "grade3": retrieval_quality(q, docs, dev.query_ids, dev.doc_ids, dev.qrels, 3.0)}
    return probe


def write_alignment(folder: str, teacher: str, teacher_folder: str) -> None:
    write_json(os.path.join(folder, "hlm_alignment.json"),
               {"teacher": teacher, "teacher_checksum": weights_checksum(teacher_folder)})


def pooled_features(enc, ids: list[list[int]], batch: int = 256) -> torch.Tensor:
    """Unnormalised pooled student features [n, H] (before any projection)."""
    with torch.inference_mode():
        return torch.cat([enc.embed_batch(pack(ids[s: s + batch]), normalize=False)
                          for s in range(0, len(ids), batch)]).float()


def lstsq_head(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_W,b ‖xWᵀ + b − y‖² + ridge‖W‖²: x [n, H], y [n, D] -> (W [D, H], b [D])."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = (x - xm).double(), (y - ym).double()
    a = xc.T @ xc + ridge * len(x) * torch.eye(x.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(a, xc.T @ yc).T.float()
    return w, ym - xm @ w.T


def distance(enc, ids: list[list[int]], targets: np.ndarray, batch: int = 256) -> float:
    """Mean ‖f_S(q) − f_T(q)‖² over the given queries (normalised vectors: 2 − 2·cos)."""
    with torch.inference_mode():
        s = torch.cat([enc.embed_batch(pack(ids[i: i + batch]), normalize=True) for i in range(0, len(ids), batch)])
    return float((s.float() - torch.as_tensor(targets)).pow(2).sum(-1).mean())


def train_align(cfg: AlignConfig) -> dict:
    if cfg.loss not in ALIGN_LOSSES:
        raise ValueError(f"unknown alignment loss {cfg.loss!r}; choose one of {', '.join(ALIGN_LOSSES)}")
    if cfg.proj_init not in ("lstsq", "random"):
        raise ValueError(f"proj_init must be 'lstsq' or 'random', got {cfg.proj_init!r}")
    torch.manual_seed(cfg.seed)
    dist_utils.setup()
    queries, holdout = load_queries(cfg)
    extras = _extras(cfg)  # checked up front
    probe = dev_probe(cfg)
    teacher_folder, t_dim = check_folder(cfg.teacher, "teacher")
    start = resume_or(cfg.student, cfg.out_dir, cfg.resume)
    enc = load_encoder(start, cfg.max_length, "student")
    if enc.config.output_dim and enc.dim != t_dim:
        attach_projection(enc, t_dim, "student")  # raises: the student's head has the wrong width
    show = dist_utils.rank() == 0
    targets = cached_encode(teacher_folder, queries, cfg.targets_dir or cache_dir(cfg.out_dir, "teacher_targets"),
                            batch_size=cfg.encode_batch_size, show_progress=show)
    if targets.shape[1] != t_dim:
        raise ValueError(f"cached teacher targets are {targets.shape[1]}-d, the teacher is {t_dim}-d")
    ids = enc.tokenize(queries)
    held, train_ids = ids[:holdout], ids[holdout:]
    held_t, train_t = targets[:holdout], targets[holdout:]
    n_extra = 0
    for k, (extra, tdir) in enumerate(extras):
        extra_t = cached_encode(teacher_folder, extra["text"],
                                tdir or cache_dir(cfg.out_dir, "extra_targets" + (f"_{k}" if k else "")),
                                ids=extra["id"], batch_size=cfg.encode_batch_size, show_progress=show)
        if extra_t.shape[1] != t_dim:
            raise ValueError(f"extra targets are {extra_t.shape[1]}-d, the teacher is {t_dim}-d")
        train_ids = train_ids + enc.tokenize(extra["text"])
        train_t = np.concatenate([train_t, extra_t])
        n_extra += len(extra["text"])

    def init():
        n = min(len(train_ids), 4096)
        return lstsq_head(pooled_features(enc, train_ids[:n]), torch.as_tensor(train_t[:n]))
    attach_projection(enc, t_dim, "student", init if cfg.proj_init == "lstsq" else None)
    dist_before = distance(enc, held, held_t)
    tower = dist_utils.wrap(enc)
    tt = torch.as_tensor(train_t)

    def step_loss(step: int, idx: np.ndarray) -> torch.Tensor:
        local = idx[dist_utils.local_slice(len(idx))]
        s = dist_utils.gather(tower(pack([train_ids[i] for i in local])))
        return alignment_loss(s, tt[idx], cfg.loss)

    def extra_files(folder: str) -> None:
        write_alignment(folder, cfg.teacher, teacher_folder)

    curve = []  # (step, dev metrics): kept in the run log, restored on resume from the checkpoint's log

    def on_step(done: int) -> None:
        if probe is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            curve[:] = [c for c in curve if c["step"] < done]  # a resumed run re-measures past its checkpoint
            curve.append({"step": done, "distance": distance(enc, held, held_t), **probe(enc)})
            write_json(os.path.join(cfg.out_dir, "curve.json"), curve)

    if probe is not None:
        old = os.path.join(cfg.out_dir, "curve.json")
        if cfg.resume and os.path.exists(old):
            import json
            with open(old) as f:
                curve.extend(json.load(f))
        if not curve:
            on_step(0)
    log = loop.train(cfg, enc, tower, len(train_ids), step_loss, "align", extra_files,
                     {"queries": len(train_ids) - n_extra, "extra_texts": n_extra, "holdout": len(held),
                      "distance_before": dist_before}, on_step=on_step)
    if curve:
        log["curve"] = curve
    if dist_utils.rank() == 0:
        log["distance_after"] = distance(enc, held, held_t)
        write_json(os.path.join(cfg.out_dir, "run_log.json"), log)
    return log
