"""The embedding interface of `Engine`, built on its `submit(text, deadline_ms, truncate) -> Future`: what
callers use (the HTTP front-end, `Retriever`, the demo), apart from the batching pipeline in `engine.py`.

    vecs = eng.encode(["a", "b"])                                   # np.float32 [n, d], blocking
    vecs = await eng.aencode(["a", "b"])
    vecs = eng.embed(["a"], role="query", dim=256)                  # as `Encoder.embed` returns them
    vecs, n_tokens = await eng.aembed(["a"], dim=256, deadline_ms=50, truncate=False, return_tokens=True)
    ids = eng.tokenize(["a"], truncate=False)                       # what the model is fed (role prompt included)

A mixin: it expects `submit`, `encoder`, `role`, `prompt`, `normalize` and `dim` from the class using it.
"""
from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait

import numpy as np

from hlm_engine.encoder import check_role
from hlm_engine.serving.scheduler import QueueFull


class InputTooLong(ValueError):
    """A text longer than the model takes (`truncate=False`) or than a batch holds (max_batch_tokens).
    `index`: its position in the texts of an `aembed`/`tokenize` call (None for a single submit)."""

    def __init__(self, n_tokens: int, limit: int, what: str = "max_length", index: int | None = None):
        super().__init__(f"text is too long: {n_tokens} tokens > {what}={limit}")
        self.n_tokens, self.limit, self.what, self.index = n_tokens, limit, what, index


class EmbeddingAPI:
    def encode(self, texts) -> np.ndarray:
        """Texts -> np.float32 [n, d] through the batching pipeline; raises the first request's error.
        When the queue is full it waits for its own oldest pending request (QueueFull only when it has
        none: the queue is full of other callers' work)."""
        futs, pending = [], deque()
        for t in _as_list(texts):
            while True:
                try:
                    fut = self.submit(t)
                    break
                except QueueFull:
                    futures_wait([_oldest_pending(pending, futs)])
            futs.append(fut)
            pending.append(fut)
        return self._stack([f.result() for f in futs])

    async def aencode(self, texts) -> np.ndarray:
        """`encode` for asyncio: awaits the futures (asyncio.wrap_future) instead of blocking the loop."""
        futs, pending = [], deque()
        for t in _as_list(texts):
            while True:
                try:
                    fut = self.submit(t)
                    break
                except QueueFull:
                    await asyncio.wait([asyncio.wrap_future(_oldest_pending(pending, futs))])
            futs.append(fut)
            pending.append(fut)
        return self._stack(await asyncio.gather(*(asyncio.wrap_future(f) for f in futs)))

    # ------------------------------------------------------------------ the embedding interface
    def embed(self, texts, role: str | None = None, dim: int | None = None) -> np.ndarray:
        """Texts -> np.float32 [n, dim or self.dim], as `Encoder.embed` returns them. An engine serves one role
        (its prompt is applied to every request); asking for another raises ValueError. `dim` truncates
        (Matryoshka) and re-normalises vectors of a normalising engine."""
        self._check_role(role)
        return self._fit_dim(self.encode(texts), dim)

    async def aembed(self, texts, role: str | None = None, dim: int | None = None, *,
                     deadline_ms: float | None = None, truncate: bool = True, return_tokens: bool = False):
        """`embed` for asyncio (the HTTP front-end): awaits the futures, never blocks the loop; role and dim as
        in `embed`. Fails fast: the first failed request cancels the others and its exception is raised, its
        `index` attribute set to its position in `texts`; QueueFull (cancelling those already submitted) when
        the queue is full. Cancelling the awaiting task cancels every request (queued ones are never computed).
        return_tokens=True -> (vectors, token count per text)."""
        self._check_role(role)
        if dim is not None:
            self.encoder.check_dim(dim)
        texts = _as_list(texts)
        futs = []
        try:
            for t in texts:
                futs.append(self.submit(t, deadline_ms, truncate))
            if len(futs) == 1:
                rows = [await asyncio.wrap_future(futs[0])]
            else:
                waits = [asyncio.wrap_future(f) for f in futs]
                await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
                for w in waits:  # a failure: the first by position among those done
                    if w.done() and not w.cancelled() and w.exception() is not None:
                        raise w.exception()
                rows = [w.result() for w in waits]
        except BaseException as e:
            for f in futs:
                f.cancel()
            for i, f in enumerate(futs):
                if f.done() and not f.cancelled() and f.exception() is e:
                    e.index = i
            raise
        out = self._fit_dim(self._stack(rows), dim)
        return (out, [f.n_tokens for f in futs]) if return_tokens else out

    def tokenize(self, texts, truncate: bool = True) -> list[list[int]]:
        """Token ids as this engine feeds them to the model (the role's prompt and special tokens included);
        truncate=False raises InputTooLong (its `index` set) for a text over the model's max_length."""
        texts = _as_list(texts)
        out = self.encoder.tokenize(texts, self.prompt)
        if not truncate:
            for i, (t, ids) in enumerate(zip(texts, out)):
                if len(ids) >= self._max_length() and (n := self._full_length(t)) > len(ids):
                    raise InputTooLong(n, len(ids), index=i)
        return out

    def _check_role(self, role: str | None) -> None:
        if role is not None and role != self.role:
            check_role(role)
            raise ValueError(f"this engine serves role {self.role!r}, not {role!r}")

    def _fit_dim(self, out: np.ndarray, dim: int | None) -> np.ndarray:
        if dim is not None and dim != out.shape[1]:
            self.encoder.check_dim(dim)
            if dim > out.shape[1]:
                raise ValueError(f"dim {dim} exceeds the engine's {out.shape[1]}-d vectors")
            out = out[:, :dim]
            if self.normalize:  # unit length again after truncation: same direction as truncate-then-normalise
                out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _max_length(self) -> int:
        return self.encoder.max_length

    def _full_length(self, text: str) -> int:
        """Token count of `text` (with the prompt, special tokens and any EOS) before truncation. Only asked
        for texts that reach max_length, so the untruncated tokenizer is built on first use."""
        tok = self.__dict__.get("_untruncated")
        if tok is None:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(self.encoder.tokenizer.path)
            tok.no_truncation()
            tok.no_padding()
            self._untruncated = tok
        eos = getattr(self.encoder.tokenizer, "eos", None)
        ids = tok.encode((self.prompt or "") + text).ids
        return len(ids) + (1 if eos is not None and (not ids or ids[-1] != eos) else 0)

    def _stack(self, rows) -> np.ndarray:
        return np.stack(rows) if rows else np.empty((0, self.dim), np.float32)


def _as_list(texts) -> list:
    if isinstance(texts, str):
        raise ValueError("expected a list of strings, got a single str (wrap it in a list)")
    return list(texts)


def _oldest_pending(pending: deque, futs: list) -> Future:
    """The caller's oldest unfinished request, to wait on when the queue is full. None left: the queue
    is full of other callers' work, so give up: cancel ours and raise QueueFull."""
    while pending and pending[0].done():
        pending.popleft()
    if not pending:
        for f in futs:
            f.cancel()
        raise QueueFull("queue full of other requests; retry later")
    return pending[0]
