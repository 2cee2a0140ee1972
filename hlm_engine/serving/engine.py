"""`Engine`: online encoding with dynamic batching. Requests arrive one at a time from many threads;
the model sees packed batches.

    with Engine(encoder, max_batch_tokens=8192, max_batch_size=256, max_delay_us=2000,
                max_queued_requests=10000, workers=1, tokenize_in_caller=False) as eng:
        fut = eng.submit("cordless drill", deadline_ms=None, truncate=True)   # Future -> np.float32 [d]
        vecs = eng.encode(["a", "b"])                          # np.float32 [n, d]
        vecs = await eng.aencode(["a", "b"])
        vecs = eng.embed(["a"], role="query", dim=256)        # the embedding interface (also Encoder.embed)
        vecs, n_tokens = await eng.aembed(["a"], dim=256, deadline_ms=50, return_tokens=True)
        eng.metrics(); eng.metrics_text()

This file is the pipeline behind `submit`; the calls built on it (encode, aencode, embed, aembed, tokenize)
are `hlm_engine.serving.embed_api.EmbeddingAPI`, which Engine mixes in.

Pipeline: submit (caller thread: cheap checks, admission) -> inbox -> tokenizer thread (the Rust batch
encoder over whatever has queued up) -> scheduler (`hlm_engine.serving.scheduler`: batch membership and timing)
-> model worker thread(s) (`encoder.embed_ids` on one packed batch) -> futures.
tokenize_in_caller=True skips the inbox: submit() tokenizes and schedules in the caller's thread (~30 us
more per call), saving a thread hand-off per request (~0.1 ms of CPU on the 2-core dev box, where that
CPU comes out of the model's share): for a front-end that submits from one I/O thread.

Failure contract: bad input fails that future only (ValueError; InputTooLong for a text over max_length with
truncate=False, or over max_batch_tokens); a full queue raises QueueFull in the
caller at once (request count), or fails the future with QueueFull once its token count is known
(max_queued_tokens); a passed deadline fails with DeadlineExceeded and is never computed; a model error
fails only its batch (ModelError, the cause chained); close() drains or fails every pending request.
"""
from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future

from hlm_engine.encoder import check_role
from hlm_engine.serving.embed_api import EmbeddingAPI, InputTooLong
from hlm_engine.serving.metrics import EngineMetrics
from hlm_engine.serving.scheduler import OK, DeadlineExceeded, QueueFull, Scheduler, now_us

log = logging.getLogger("hlm_engine.serving.engine")


class ModelError(RuntimeError):
    """The encoder raised on the batch holding this request (the original exception is the __cause__)."""


class EngineClosed(RuntimeError):
    """The engine was closed (submit after close, or close(drain=False) before the request ran)."""


class _EngineFuture(Future):
    """A Future whose successful cancel() also takes the request out of the scheduler's queue.
    `n_tokens`: the request's token count (prompt and special tokens included) once tokenized."""

    n_tokens: int | None = None
    truncate: bool = True

    def cancel(self) -> bool:
        ok = super().cancel()
        if ok and getattr(self, "_rid", None) is not None:
            self._engine._on_cancel(self)
        return ok


def _bad_input(text, deadline_ms) -> ValueError | None:
    if not isinstance(text, str):
        return ValueError(f"Engine.submit expects a non-empty str, got {type(text).__name__}")
    if not text.strip():
        return ValueError(f"Engine.submit got an empty or whitespace-only text ({text!r})")
    if deadline_ms is not None and (isinstance(deadline_ms, bool) or not isinstance(deadline_ms, (int, float))
                                    or not math.isfinite(deadline_ms) or deadline_ms < 0):
        return ValueError(f"deadline_ms must be a finite number >= 0 or None, got {deadline_ms!r}")
    return None


class Engine(EmbeddingAPI):
    def __init__(self, encoder, max_batch_tokens: int = 8192, max_batch_size: int = 256, max_delay_us: int = 2000,
                 max_queued_requests: int = 10000, max_queued_tokens: int | None = None, workers: int = 1,
                 normalize: bool = True, dim: int | None = None, prompt: str | None = None,
                 tokenize_batch: int = 256, scheduler: str | None = None, tokenize_in_caller: bool = False,
                 role: str = "query"):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if tokenize_batch < 1:
            raise ValueError(f"tokenize_batch must be >= 1, got {tokenize_batch}")
        encoder.check_dim(dim)
        check_role(role)
        # One role per engine: its prompt (a query's instruction) applies to every request, on every path.
        self.role = role
        if prompt is None and hasattr(encoder, "prompt_for"):
            prompt = encoder.prompt_for(role)
        self.encoder, self.normalize, self.truncate_dim, self.prompt = encoder, normalize, dim, prompt
        self.max_queued_requests, self.tokenize_batch = max_queued_requests, tokenize_batch
        self.tokenize_in_caller = tokenize_in_caller
        self.scheduler = Scheduler(max_batch_tokens, max_batch_size, max_delay_us, max_queued_requests,
                                   max_queued_tokens, impl=scheduler)
        self._submit_core = self.scheduler.core.submit
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._inbox: deque = deque()   # (rid, text, future, deadline_us, t_submit) awaiting tokenization
        self._inflight = 0             # accepted, not yet dispatched/expired/failed: the admission bound
        self._tok_idle = False
        self._admitting = 0            # submit() calls tokenizing in their own thread (tokenize_in_caller)
        self._local = threading.local()
        self._closed = False
        self._payload: dict = {}       # rid -> (future, ids, t_submit) while in the scheduler
        self._metrics = EngineMetrics(lambda: self._inflight)
        self._threads = [threading.Thread(target=self._tokenize_loop, name="hlm-tokenize", daemon=True)]
        self._threads += [threading.Thread(target=self._worker_loop, name=f"hlm-model-{i}", daemon=True)
                          for i in range(workers)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ caller side
    def submit(self, text: str, deadline_ms: float | None = None, truncate: bool = True) -> Future:
        """One text -> Future of np.float32 [d]. Raises QueueFull (backpressure) or EngineClosed; bad input
        fails the returned future with ValueError instead (InputTooLong for a text over the model's max_length
        when truncate=False: it is never cut silently then)."""
        fut = _EngineFuture()
        fut._engine, fut._rid = self, None
        if not truncate:
            fut.truncate = False
        err = _bad_input(text, deadline_ms)
        if err is not None:
            self._metrics.invalid.inc()
            fut.set_exception(err)
            return fut
        # Capped at ~30 years so the absolute deadline stays well inside int64 microseconds.
        deadline = -1 if deadline_ms is None else now_us() + int(min(deadline_ms, 1e12) * 1000)
        with self._cv:
            if self._closed:
                raise EngineClosed("Engine is closed")
            if self._inflight >= self.max_queued_requests:
                self._metrics.rejected.inc()
                raise QueueFull(f"queue full: {self._inflight} requests pending "
                                f"(max_queued_requests={self.max_queued_requests})")
            self._inflight += 1
            fut._rid = rid = next(self._ids)
            item = (rid, text, fut, deadline, time.perf_counter())
            if self.tokenize_in_caller:
                self._admitting += 1
            else:
                self._inbox.append(item)
                if self._tok_idle:
                    self._tok_idle = False
                    self._cv.notify_all()
        if self.tokenize_in_caller:
            self._admit_in_caller(item)
        return fut

    def _admit_in_caller(self, item) -> None:
        self._local.admitting = True
        try:
            self._admit_chunk([item], "submit()")
        finally:
            self._local.admitting = False
            with self._cv:
                self._admitting -= 1
                if self._closed:
                    self._cv.notify_all()  # close() waits for admissions in flight before closing the queue

    @property
    def dim(self) -> int:
        """Width of the vectors this engine returns (the encoder's, or the engine's truncation)."""
        return self.truncate_dim or self.encoder.dim

    @property
    def space(self) -> dict:
        return self.encoder.space

    @property
    def config(self):
        return self.encoder.config

    def _on_cancel(self, fut: Future) -> None:
        self._metrics.cancelled.inc()
        if self.scheduler.cancel(fut._rid):  # still queued: free its place now (else skipped at dispatch)
            self._payload.pop(fut._rid, None)
            with self._cv:
                self._inflight -= 1
            # CANCELLED -> CANCELLED_AND_NOTIFIED, as an executor does at dispatch time:
            # concurrent.futures.wait/as_completed only count a cancelled future once notified.
            fut.set_running_or_notify_cancel()

    # ------------------------------------------------------------------ tokenizer thread
    def _tokenize_loop(self) -> None:
        while True:
            with self._cv:
                while not self._inbox and not self._closed:
                    self._tok_idle = True
                    self._cv.wait()
                if not self._inbox:
                    return
                n = min(len(self._inbox), self.tokenize_batch)
                items = [self._inbox.popleft() for _ in range(n)]
            self._admit_chunk(items, "tokenizer thread")

    def _admit_chunk(self, items, where: str) -> None:
        self._metrics.requests.inc(len(items))  # counted per chunk (off the caller's thread by default)
        try:
            dropped = self._admit(items)
        except BaseException as e:  # a bug here must not strand requests
            log.exception("%s failed on %d requests", where, len(items))
            lost = [it for it in items if it[0] not in self._payload]  # those not handed on yet
            for it in lost:
                _fail(it[2], RuntimeError(f"engine tokenizer failed: {e!r}"))
            dropped = len(lost)
        if dropped:
            with self._cv:
                self._inflight -= dropped

    def _admit(self, items) -> int:
        """Tokenize one chunk and hand it to the scheduler; returns how many left the pipeline here."""
        live = []
        for it in items:
            if it[2].cancelled():
                it[2].set_running_or_notify_cancel()  # notify waiters (see _on_cancel)
            else:
                live.append(it)
        dropped = len(items) - len(live)
        texts = [it[1] for it in live]
        t_tok = time.perf_counter()
        try:
            ids_list = self.encoder.tokenize(texts, self.prompt)
        except ValueError:  # one bad text (e.g. too long in raise mode): find it, fail only it
            ids_list = []
            for t in texts:
                try:
                    ids_list.append(self.encoder.tokenize([t], self.prompt)[0])
                except ValueError as e:
                    ids_list.append(ValueError(str(e).replace("input 0", "text", 1)))
        if live:
            self._metrics.tokenize.observe(time.perf_counter() - t_tok)
        for (rid, text, fut, deadline, t0), ids in zip(live, ids_list):
            if not isinstance(ids, Exception) and not fut.truncate and len(ids) >= self._max_length():
                n = self._full_length(text)  # at the cap: cut, or exactly max_length long?
                if n > len(ids):
                    ids = InputTooLong(n, len(ids))
            if isinstance(ids, Exception):
                self._metrics.invalid.inc()
                _fail(fut, ids)
                dropped += 1
                continue
            fut.n_tokens = len(ids)
            self._payload[rid] = (fut, ids, t0)  # before submit: a worker may take it at once
            status = self._submit_core(rid, len(ids), deadline, -1)
            if status != OK:
                del self._payload[rid]
                err = self.scheduler.error(status, rid, len(ids))
                if isinstance(err, QueueFull):
                    self._metrics.rejected.inc()
                elif isinstance(err, ValueError):
                    self._metrics.invalid.inc()
                    err = InputTooLong(len(ids), self.scheduler.max_batch_tokens, "max_batch_tokens")
                _fail(fut, err)
                dropped += 1
        return dropped

    # ------------------------------------------------------------------ model worker thread(s)
    def _worker_loop(self) -> None:
        next_batch = self.scheduler.core.next_batch
        while True:
            r = next_batch(-1)
            if r is None:
                return
            batch, expired = r
            with self._cv:
                self._inflight -= len(batch) + len(expired)
            for rid in expired:
                p = self._payload.pop(rid, None)
                if p is not None and _fail(p[0], DeadlineExceeded(
                        f"deadline passed after {time.perf_counter() - p[2]:.4f}s in the queue; not computed")):
                    self._metrics.expired.inc()
            if batch:
                try:
                    self._run(batch)
                except BaseException as e:  # never let a worker die: fail what is left of the batch
                    log.exception("model worker failed outside the model call")
                    for rid in batch:
                        p = self._payload.pop(rid, None)
                        if p is not None:
                            _fail(p[0], RuntimeError(f"engine worker failed: {e!r}"))

    def _run(self, batch: list[int]) -> None:
        t_dispatch = time.perf_counter()
        futs, ids_list = [], []
        for rid in batch:
            fut, ids, t0 = self._payload.pop(rid)
            if fut.set_running_or_notify_cancel():  # False: cancelled while queued -> skipped
                futs.append(fut)
                ids_list.append(ids)
                self._metrics.queue_wait.observe(t_dispatch - t0)
        if not futs:
            return
        n_tokens = sum(len(x) for x in ids_list)
        try:
            out = self.encoder.embed_ids(ids_list, self.normalize, self.truncate_dim)
        except Exception as e:
            self._metrics.failed.inc(len(futs))
            for fut in futs:
                err = ModelError(f"encoder failed on a batch of {len(futs)} requests ({n_tokens} tokens): {e!r}")
                err.__cause__ = e
                fut.set_exception(err)
            return
        self._metrics.compute.observe(time.perf_counter() - t_dispatch)
        self._metrics.batch_size.observe(len(futs))
        self._metrics.batch_tokens.observe(n_tokens)
        for i, fut in enumerate(futs):
            fut.set_result(out[i])
        self._metrics.completed.inc(len(futs))

    # ------------------------------------------------------------------ metrics and lifecycle
    def metrics(self) -> dict:
        d = self._metrics.as_dict()
        d["scheduler"] = self.scheduler.impl
        return d

    def metrics_text(self) -> str:
        return self._metrics.text()

    @property
    def registry(self):
        return self._metrics.registry

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting; drain=True computes every pending request, drain=False fails them with
        EngineClosed. Idempotent. Returns when every thread has exited (or `timeout` per thread)."""
        with self._cv:
            self._closed = True
            leftovers = [] if drain else list(self._inbox)
            if not drain:
                self._inbox.clear()
                self._inflight -= len(leftovers)
            self._cv.notify_all()
            # Admissions already past the closed check (tokenize_in_caller) finish first: what was accepted
            # reaches the scheduler before it closes, as the tokenizer thread's inbox does below.
            own = 1 if getattr(self._local, "admitting", False) else 0  # close() from a callback inside one
            self._cv.wait_for(lambda: self._admitting <= own, timeout)
        for it in leftovers:
            _fail(it[2], EngineClosed("engine closed before the request ran"))
        me = threading.current_thread()
        self._threads[0].join(timeout) if self._threads[0] is not me else None
        self.scheduler.close()  # after the tokenizer: everything it admitted is in the queue now
        if not drain:
            dropped = self.scheduler.drain()
            with self._cv:
                self._inflight -= len(dropped)
            for rid in dropped:
                p = self._payload.pop(rid, None)
                if p is not None:
                    _fail(p[0], EngineClosed("engine closed before the request ran"))
        for t in self._threads[1:]:
            if t is not me:
                t.join(timeout)
        for rid in list(self._payload):  # only after a join timeout: nothing may hang
            p = self._payload.pop(rid, None)
            if p is not None:
                _fail(p[0], EngineClosed("engine closed while the request was pending"))

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.scheduler
        return (f"Engine(scheduler={s.impl}, max_batch_tokens={s.max_batch_tokens}, "
                f"max_batch_size={s.max_batch_size}, max_delay_us={s.max_delay_us}, "
                f"workers={len(self._threads) - 1}, tokenize_in_caller={self.tokenize_in_caller})")


def _fail(fut: Future, err: BaseException) -> int:
    """Fail a pending future (skipping one the caller cancelled); returns 1 if it was failed."""
    try:
        if fut.set_running_or_notify_cancel():
            fut.set_exception(err)
            return 1
    except RuntimeError:  # already running or finished: someone else owns its outcome
        pass
    return 0
