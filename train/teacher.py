"""Phase 1 — fine-tune the teacher (document + query encoder, symmetric) with masked InfoNCE.

Data: Home Depot train pairs (relevance >= threshold), K hard negatives per query mined from the
off-the-shelf teacher's own exact index (ranks [mine_lo, mine_hi), judged products skipped). Each step
encodes queries, positives and negatives in one packed forward (one DDP forward per step) and applies
`infonce_loss` over the global batch. The teacher is measured on the dev split before and after.

With only the top `trainable_layers` trained (the CPU recipe) the frozen bottom's hidden states are
computed once per training text (`FrozenBottom`, single process) and every later forward runs the top
layers only: the off-the-shelf and the fine-tuned corpus encodings and each step (MPNet, top 4 of 12: a
corpus encoding costs a third, a step about half). The same math; a finished run also leaves the fine-tuned
teacher's train-query vectors for refinement (`finetuned_queries_dir`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from hlm_engine import ops
from hlm_engine.io import write_json
from hlm_engine.models.packing import pack

from . import distributed as dist_utils
from . import loop
from .common import cache_dir, load_encoder, resume_or
from .data import contrastive_batch, text_keys
from .embed import cached_encode, retrieval_quality
from .losses import InfoNCEConfig, infonce_loss
from .mining import mine_hard_negatives
from .runner import Optim, Slice, prepare  # noqa: F401  (prepare: re-exported, its old home)


@dataclass
class TeacherConfig(Slice, Optim):
    teacher: str = "mpnet"
    out_dir: str = "runs/teacher"
    skip_threshold: float = 2.0            # never mine a product judged >= this for the query
    max_length: int | None = 64            # titles and queries are short; caps the cost of outliers
    num_negatives: int = 3
    trainable_layers: int | None = None    # fine-tune only the top N layers (None = all): on CPU the
    #                                        backward through a 12-layer teacher is most of a step's cost
    mine_lo: int = 10
    mine_hi: int = 100
    temperature: float = 0.05
    margin: float = 0.1
    query_query: bool = True               # q–q in-batch negatives in the InfoNCE denominator
    doc_doc: bool = True                   # d⁺–d negatives (constants in refine: they only enlarge Z)
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-5
    save_every: int = 50
    evaluate: bool = True
    encode_batch_size: int = 64
    base_corpus_dir: str | None = None     # cache of the off-the-shelf teacher's corpus vectors (shareable)
    corpus_dir: str | None = None          # where the fine-tuned teacher's corpus vectors go (default:
    #                                        finetuned_corpus_dir(out_dir)); the index input
    backend: str = "torch"                 # "cpu": the C++ kernels for every no-grad pass (frozen bottom,
    #                                        corpus encodings, dev checks; ~1.5x on CPU), the reference under
    #                                        autograd; "torch": the reference everywhere


def finetuned_corpus_dir(out_dir: str) -> str:
    """Where a finished run leaves the fine-tuned teacher's corpus vectors (the index input)."""
    return cache_dir(out_dir, "corpus_finetuned")


def finetuned_queries_dir(out_dir: str) -> str:
    """Where a finished top-layers-only run leaves the fine-tuned teacher's train-query vectors (the
    refinement's ℓ2-anchor targets: `RefineConfig.query_targets_dir`; computed there when absent)."""
    return cache_dir(out_dir, "train_queries_finetuned")


def freeze_below(enc, trainable_layers: int | None) -> None:
    """Freeze the embeddings and every layer but the top `trainable_layers` (autograd then stops there)."""
    if trainable_layers is None:
        return
    n = len(enc.model.layers)
    if not 1 <= trainable_layers <= n:
        raise ValueError(f"trainable_layers must be in 1..{n} for this {n}-layer model, got {trainable_layers}")
    for p in enc.model.parameters():
        p.requires_grad_(False)
    for layer in enc.model.layers[n - trainable_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)


class FrozenBottom:
    """The hidden states entering the first trainable layer, computed once per text and then reused.

    With only the top `trainable_layers` trained, everything below them (embeddings, lower layers, MPNet's
    shared relative-position bias) is frozen, so those states never change: each training step and each
    corpus encoding (off the shelf, then fine-tuned) runs only the top layers. For MPNet with the top 4 of
    12 trained this skips 2/3 of every forward. Same math as the full forward (up to float rounding of
    other batch shapes). Used only in a single process (a DDP step must go through the wrapped tower)."""

    def __init__(self, enc, first: int, texts: list[list[int]], batch_size: int = 64, show_progress: bool = False):
        self.enc, self.first = enc, first
        self.states: dict[tuple[int, ...], torch.Tensor] = {}
        todo = sorted({tuple(t) for t in texts}, key=len, reverse=True)
        starts = range(0, len(todo), batch_size)
        if show_progress:
            from tqdm import tqdm
            starts = tqdm(starts, desc=f"frozen layers 0-{first - 1}", unit="batch")
        with torch.no_grad():  # not inference_mode: the states feed autograd graphs of the top layers later
            for s in starts:
                chunk = todo[s: s + batch_size]
                b = pack([list(t) for t in chunk])
                h = enc.model(b, stop=first)
                cu = b.cu_seqlens.tolist()
                for j, t in enumerate(chunk):
                    self.states[t] = h[cu[j]: cu[j + 1]]

    def embed(self, seqs: list[list[int]], normalize: bool = True) -> torch.Tensor:
        """Pooled embeddings [B, d] of token-id lists (each must be one of the cached texts); differentiable
        in the trainable layers."""
        b = pack(seqs)
        x = torch.cat([self.states[tuple(t)] for t in seqs])
        hidden = self.enc.model(b, start=(self.first, x))
        return ops.pool(hidden, b.cu_seqlens, self.enc.config.pooling, None, normalize,
                        backend=self.enc.backend)

    def encoder(self):
        """An encoder for `cached_encode` / `encode_corpus` (the same identity: folder, config, tokenizer)
        whose forward starts from the cached states."""
        return _BottomEncoder(self)


class _BottomEncoder:
    def __init__(self, bottom: FrozenBottom):
        self._bottom = bottom
        self._enc = bottom.enc

    def __getattr__(self, name):  # folder, config, dim, tokenizer, ... of the wrapped encoder
        return getattr(self._enc, name)

    def embed_ids(self, ids_list, normalize: bool = True, dim=None):
        with torch.no_grad():
            return self._bottom.embed(ids_list, normalize).float().cpu().numpy()


FROZEN_BOTTOM_MAX_BYTES = 4 << 30  # fp32 states of every training text: ~0.4 GB for the demo's 6.5k titles


def _frozen_bottom(enc, trainable_layers: int | None, texts: list[list[int]], batch_size: int,
                   show_progress: bool = False):
    """A FrozenBottom when only the top layers train, in one process, and the states fit the budget."""
    n = len(enc.model.layers)
    if (trainable_layers is None or trainable_layers >= n or dist_utils.world_size() != 1
            or getattr(enc.model, "proj", None) is not None):
        return None
    if sum(len(t) for t in texts) * enc.config.hidden_size * 4 > FROZEN_BOTTOM_MAX_BYTES:
        return None
    return FrozenBottom(enc, n - trainable_layers, texts, batch_size, show_progress)


def train_teacher(cfg: TeacherConfig) -> dict:
    torch.manual_seed(cfg.seed)
    dist_utils.setup()
    train, dev, pairs = prepare(cfg)
    start = resume_or(cfg.teacher, cfg.out_dir, cfg.resume)
    base = load_encoder(cfg.teacher, cfg.max_length, "teacher", cfg.backend)
    corpus_keys = text_keys(train.doc_texts)
    show = dist_utils.rank() == 0

    # Only the top layers train: the states entering them are computed once for every training text and
    # serve the off-the-shelf corpus encoding, every step and the fine-tuned corpus encoding (FrozenBottom).
    q_ids = base.tokenize(pairs.query_texts)
    d_ids = base.tokenize(train.doc_texts)
    bottom = None
    if start == cfg.teacher:
        bottom = _frozen_bottom(base, cfg.trainable_layers, d_ids + q_ids, cfg.encode_batch_size, show)
    # Mining and the "before" numbers use the off-the-shelf teacher (cached: a resumed run reuses them).
    base_enc = bottom.encoder() if bottom is not None else base
    doc_base = cached_encode(base_enc, train.doc_texts,
                             cfg.base_corpus_dir or cache_dir(cfg.out_dir, "corpus_base"), ids=train.doc_ids,
                             batch_size=cfg.encode_batch_size, show_progress=show)
    q_base = cached_encode(base_enc, pairs.query_texts, cache_dir(cfg.out_dir, "train_queries_base"),
                           batch_size=cfg.encode_batch_size, show_progress=show)
    skip = [{j for j, r in rel.items() if r >= cfg.skip_threshold} for rel in pairs.judged]
    skip_keys = [{int(corpus_keys[j]) for j in s} for s in skip]
    negs = mine_hard_negatives(q_base, doc_base, cfg.num_negatives, skip, cfg.mine_lo, cfg.mine_hi, cfg.seed,
                               corpus_keys, skip_keys)
    before = None
    if cfg.evaluate:
        qd = base.encode(dev.queries, batch_size=cfg.encode_batch_size)
        before = retrieval_quality(qd, doc_base, dev.query_ids, dev.doc_ids, dev.qrels, cfg.threshold)

    enc = base if start == cfg.teacher else load_encoder(start, cfg.max_length, "teacher", cfg.backend)
    freeze_below(enc, cfg.trainable_layers)
    if bottom is None and start != cfg.teacher:  # resumed: the frozen part is the off-the-shelf one
        bottom = _frozen_bottom(enc, cfg.trainable_layers, d_ids + q_ids, cfg.encode_batch_size, show)
    tower = dist_utils.wrap(enc)
    icfg = InfoNCEConfig(cfg.temperature, cfg.margin, cfg.query_query, cfg.doc_doc)

    def step_loss(step: int, idx: np.ndarray) -> torch.Tensor:
        b = contrastive_batch(pairs, negs, idx, corpus_keys, cfg.threshold)
        B, K = len(idx), cfg.num_negatives
        local = dist_utils.local_slice(B)
        lq = b.query_rows[local]
        lpos = b.pool_rows[:B][local]
        lneg = b.pool_rows[B:].reshape(B, K)[local].reshape(-1)
        seqs = [q_ids[i] for i in lq] + [d_ids[j] for j in lpos] + [d_ids[j] for j in lneg]
        out = bottom.embed(seqs) if bottom is not None else tower(pack(seqs))
        nq = len(lq)
        q = dist_utils.gather(out[:nq])
        pos = dist_utils.gather(out[nq: 2 * nq])
        neg = dist_utils.gather(out[2 * nq:])
        docs = torch.cat([pos, neg])
        return infonce_loss(q, docs, torch.as_tensor(b.pos_index), torch.as_tensor(b.doc_keys),
                            torch.as_tensor(b.query_keys), torch.as_tensor(b.known_pos), icfg)

    extra = {"pairs": len(pairs), "train_queries": len(pairs.query_texts), "products": len(train.doc_ids),
             "dev_before": before}
    log = loop.train(cfg, enc, tower, len(pairs), step_loss, "teacher", log_extra=extra)
    if cfg.evaluate and log["finished"]:
        # Every rank takes part: encode_corpus splits the shards over the ranks (and synchronises them).
        ft_enc = bottom.encoder() if bottom is not None else enc
        doc_ft = cached_encode(ft_enc, train.doc_texts, cfg.corpus_dir or finetuned_corpus_dir(cfg.out_dir),
                               ids=train.doc_ids, batch_size=cfg.encode_batch_size, show_progress=show)
        if bottom is not None:  # nearly free from the cached bottom states; saves refinement a teacher pass
            cached_encode(ft_enc, pairs.query_texts, finetuned_queries_dir(cfg.out_dir),
                          batch_size=cfg.encode_batch_size, show_progress=show)
        if dist_utils.rank() == 0:
            qd = enc.encode(dev.queries, batch_size=cfg.encode_batch_size)
            log["dev_after"] = retrieval_quality(qd, doc_ft, dev.query_ids, dev.doc_ids, dev.qrels, cfg.threshold)
            write_json(os.path.join(cfg.out_dir, "run_log.json"), log)
    return log
