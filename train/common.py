"""Shared start-of-phase work: loading and checking encoders, choosing the corpus slice, tokenizing.

Everything that can be wrong with the inputs is checked here, before any encoding or training step:
an empty dataset, missing columns (`read_tsv` names them), a tokenizer whose ids overflow the model's
embedding table, a student/teacher width mismatch without a projection.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from hlm_engine.retrieval.data import RetrievalSet
from hlm_engine.encoder import Encoder

from . import loop


def load_encoder(name_or_path: str, max_length: int | None = None, role: str = "model",
                 backend: str = "torch") -> Encoder:
    """fp32 encoder for training. backend "torch" = the reference everywhere; "cpu" = our C++ kernels on
    every no-grad pass (encodings, frozen layers) and the reference wherever autograd records."""
    enc = Encoder.from_pretrained(name_or_path, backend=backend, dtype=torch.float32, max_length=max_length)
    check_tokenizer(enc, role)
    return enc


def fast_backend() -> str:
    """"cpu" (our C++ kernels: for no-grad passes such as a teacher's frozen bottom and corpus encodings,
    and the served model) when the extension is built, else the reference."""
    from hlm_engine import ops
    try:
        return ops.resolve_backend("cpu", torch.device("cpu"))
    except RuntimeError:
        return "torch"


def check_tokenizer(enc: Encoder, role: str) -> None:
    """Every id the tokenizer can emit must index the model's embedding table (else a mid-run IndexError)."""
    tv, mv = enc.tokenizer.vocab_size, enc.config.vocab_size
    if tv > mv:
        raise ValueError(f"{role} tokenizer mismatch: {enc.tokenizer.path} has {tv} tokens but the model "
                         f"({enc.folder or enc.config.name}) embeds only {mv}: wrong tokenizer for this model")


def check_folder(name_or_path: str, role: str) -> tuple[str, int]:
    """(folder, embedding width) of a model without loading its weights; tokenizer checked as above."""
    from tokenizers import Tokenizer

    from hlm_engine.config import load_folder_config
    from hlm_engine.hub import resolve
    folder = resolve(name_or_path)
    cfg = load_folder_config(folder)
    tv = Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    if tv > cfg.vocab_size:
        raise ValueError(f"{role} tokenizer mismatch: {folder}/tokenizer.json has {tv} tokens but the model "
                         f"embeds only {cfg.vocab_size}")
    return folder, cfg.embed_dim


def attach_projection(enc: Encoder, out_dim: int, role: str, init_fn=None) -> bool:
    """Give `enc` a folded linear head to `out_dim` (the teacher's width) unless it already emits that width.
    Returns True when a new head was attached. A head of another width is a hard error."""
    if enc.dim == out_dim:
        return False
    if enc.config.output_dim:
        raise ValueError(f"{role} dimension mismatch: its projection emits {enc.dim}-d vectors but the teacher "
                         f"space is {out_dim}-d")
    H = enc.config.hidden_size
    head = torch.nn.Linear(H, out_dim).to(dtype=next(enc.model.parameters()).dtype)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head.weight.normal_(0.0, H ** -0.5, generator=g)
        head.bias.zero_()
        if init_fn is not None:
            w, b = init_fn()
            head.weight.copy_(w)
            head.bias.copy_(b)
    enc.config.output_dim = out_dim   # the same config object the model holds: save/load round-trips it
    enc.model.proj = head
    return True


def resume_or(name_or_path: str, out_dir: str, resume: bool) -> str:
    """The checkpointed model folder when resuming from one, else the starting model."""
    return loop.checkpoint_model_dir(out_dir) if resume and loop.has_checkpoint(out_dir) else name_or_path


def choose_queries(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most `limit` of n items (seeded), all when limit is None."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, size=limit, replace=False))


def corpus_rows(rs: RetrievalSet, must_ids: set[str], max_products: int | None, seed: int) -> np.ndarray:
    """Sorted corpus rows: every product in `must_ids` plus seeded random distractors up to max_products."""
    n = len(rs.doc_ids)
    if max_products is None or max_products >= n:
        return np.arange(n)
    keep = np.array(sorted(i for i, d in enumerate(rs.doc_ids) if d in must_ids), dtype=np.int64)
    rest = np.setdiff1d(np.arange(n), keep)
    extra = min(max(0, max_products - len(keep)), len(rest))
    pick = np.random.default_rng([seed, 11]).choice(rest, size=extra, replace=False).astype(np.int64)
    return np.sort(np.concatenate([keep, pick]))


def judged_ids(rs: RetrievalSet, query_ids: list[str] | None = None) -> set[str]:
    qs = rs.qrels.keys() if query_ids is None else query_ids
    return {d for q in qs for d in rs.qrels.get(q, {})}


def subset_queries(rs: RetrievalSet, rows: np.ndarray) -> RetrievalSet:
    return RetrievalSet(rs.doc_ids, rs.doc_texts, [rs.query_ids[i] for i in rows], [rs.queries[i] for i in rows],
                        {rs.query_ids[i]: rs.qrels.get(rs.query_ids[i], {}) for i in rows})


def cache_dir(out_dir: str, *parts: str) -> str:
    return os.path.join(out_dir, "cache", *parts)


def write_texts_tsv(path: str, ids: list[str], texts: list[str]) -> str:
    """(id, text) rows as a TSV for `AlignConfig.extra_texts_file`, written once (atomic). Raw lines with
    whitespace collapsed: `read_tsv` reads QUOTE_NONE, so quotes inside titles stay as they are."""
    from hlm_engine.io import atomic_path
    if not os.path.exists(path):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write("id\ttext\n")
            f.writelines(f"{i}\t{' '.join(t.split())}\n" for i, t in zip(ids, texts))
    return path


def copy_model(src: str, dst: str) -> None:
    """An atomic copy of a model folder at a fixed place, refreshed only when the source folder changed
    (`hlm_source.txt` there names it)."""
    import shutil

    from hlm_engine.io import atomic_dir
    stamp = os.path.join(dst, "hlm_source.txt")
    src = os.path.abspath(src)
    if os.path.exists(stamp):
        with open(stamp) as f:
            if f.read() == src:
                return
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        with open(os.path.join(tmp, "hlm_source.txt"), "w") as f:
            f.write(src)
