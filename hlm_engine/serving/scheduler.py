"""Dynamic batching scheduler: the C++ core (`hlm_engine._scheduler`) or its pure-Python twin.

    sched = Scheduler(max_batch_tokens=8192, max_batch_size=256, max_delay_us=2000,
                      max_queued_requests=10000, max_queued_tokens=None, impl=None)
    sched.submit(req_id, n_tokens, deadline_us=None)   # raises QueueFull / ValueError / SchedulerClosed
    batch_ids, expired_ids = sched.next_batch(timeout_us=None)   # None once closed and empty

The scheduler is model-free: a request is (id, token count, arrival, deadline); the caller owns the
payloads. Batch-formation rule (identical in both implementations; see csrc/scheduler.h):
  1. expire every queued request with deadline <= now, ordered by (deadline, submit order);
  2. a batch is ready when the queue is non-empty and: closed, or max_delay_us == 0, or queued requests
     >= max_batch_size, or queued tokens >= max_batch_tokens, or now >= anchor.arrival + max_delay_us
     (anchor = the oldest queued request);
  3. fill from the anchor's length bucket, then the other buckets by distance |b - b_anchor| (shorter
     first on ties), each in submit order while sum(tokens) <= max_batch_tokens and count <=
     max_batch_size; the first request that does not fit ends its bucket (submit order is kept).
Times are microseconds on the monotonic clock (`now_us()`); `now_us=` arguments let tests drive a
virtual clock through `poll`.

`impl`: "cpp" | "python" | None (= $HLM_SCHEDULER, default "auto": C++ when built, else the twin).
"""
from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections import OrderedDict

log = logging.getLogger("hlm_engine.serving.scheduler")

OK, QUEUE_FULL, DUPLICATE, BAD_TOKENS, CLOSED = 0, 1, 2, 3, 4
NUM_BUCKETS = 128


class QueueFull(RuntimeError):
    """The bounded queue is at max_queued_requests / max_queued_tokens: back off and retry."""


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed before it was computed (it never reached the model)."""


class SchedulerClosed(RuntimeError):
    """Submitted after close()."""


def now_us() -> int:
    # CLOCK_MONOTONIC, the clock std::chrono::steady_clock reads in the C++ core.
    return time.monotonic_ns() // 1000


def length_bucket(n_tokens: int) -> int:
    """Half-octave buckets 1, 2, 3, [4,5], [6,7], [8,11], [12,15], [16,23], ...: within a bucket lengths
    differ by at most 1.5x. b(n) = n for n < 4, else 2k + bit_{k-1}(n) with k = floor(log2 n)."""
    if n_tokens < 4:
        return max(n_tokens, 0)
    k = n_tokens.bit_length() - 1
    return 2 * k + ((n_tokens >> (k - 1)) & 1)


class PyScheduler:
    """The pure-Python twin of the C++ core: same methods, same status codes, same batches."""

    def __init__(self, max_batch_tokens: int, max_batch_size: int, max_delay_us: int,
                 max_queued_requests: int, max_queued_tokens: int):
        for name, v, lo in (("max_batch_tokens", max_batch_tokens, 1), ("max_batch_size", max_batch_size, 1),
                            ("max_delay_us", max_delay_us, 0), ("max_queued_requests", max_queued_requests, 1),
                            ("max_queued_tokens", max_queued_tokens, 1)):
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}")
        self.max_batch_tokens, self.max_batch_size, self.max_delay_us = max_batch_tokens, max_batch_size, max_delay_us
        self.max_queued_requests, self.max_queued_tokens = max_queued_requests, max_queued_tokens
        self._cv = threading.Condition()
        self._reqs: dict[int, tuple] = {}             # id -> (n_tokens, arrival, deadline, seq, bucket)
        self._fifo: OrderedDict[int, None] = OrderedDict()   # every queued id, submit order
        self._buckets: dict[int, OrderedDict] = {}    # bucket -> OrderedDict of ids, submit order
        self._deadlines: list[tuple] = []             # heap of (deadline, seq, id); stale entries skipped
        self._seq = 0
        self._tokens = 0
        self._closed = False
        self._st = dict(submitted=0, rejected=0, dispatched=0, batches=0, expired=0, cancelled=0, drained=0)

    # ---------------------------------------------------------------- queue edits (lock held)
    def submit(self, req_id: int, n_tokens: int, deadline_us: int = -1, now_us: int = -1) -> int:
        with self._cv:
            if self._closed:
                return CLOSED
            if n_tokens < 1 or n_tokens > self.max_batch_tokens:
                return BAD_TOKENS
            if req_id in self._reqs:
                return DUPLICATE
            n = len(self._reqs)
            if n + 1 > self.max_queued_requests or self._tokens + n_tokens > self.max_queued_tokens:
                self._st["rejected"] += 1
                return QUEUE_FULL
            now = _clock() if now_us < 0 else now_us
            was_full = n >= self.max_batch_size or self._tokens >= self.max_batch_tokens
            wake = n == 0 or self.max_delay_us == 0
            seq, self._seq = self._seq, self._seq + 1
            b = length_bucket(n_tokens)
            deadline = -1 if deadline_us < 0 else deadline_us
            self._reqs[req_id] = (n_tokens, now, deadline, seq, b)
            self._fifo[req_id] = None
            self._buckets.setdefault(b, OrderedDict())[req_id] = None
            if deadline >= 0:
                top = self._earliest_deadline()
                wake = wake or top is None or deadline < top
                heapq.heappush(self._deadlines, (deadline, seq, req_id))
            self._tokens += n_tokens
            self._st["submitted"] += 1
            is_full = n + 1 >= self.max_batch_size or self._tokens >= self.max_batch_tokens
            if wake or (is_full and not was_full):
                self._cv.notify_all()
            return OK

    def _remove(self, req_id: int) -> None:
        n_tokens, _, _, _, b = self._reqs.pop(req_id)
        del self._fifo[req_id]
        bucket = self._buckets[b]
        del bucket[req_id]
        if not bucket:
            del self._buckets[b]
        self._tokens -= n_tokens
        # The heap entry goes stale (its id no longer maps to that seq) and is skipped when it surfaces.

    def _earliest_deadline(self):
        h = self._deadlines
        while h:
            d, seq, rid = h[0]
            r = self._reqs.get(rid)
            if r is not None and r[3] == seq:
                return d
            heapq.heappop(h)
        return None

    def cancel(self, req_id: int) -> bool:
        with self._cv:
            if req_id not in self._reqs:
                return False
            self._remove(req_id)
            self._st["cancelled"] += 1
            return True

    # ---------------------------------------------------------------- batch formation (lock held)
    def _ready(self, now: int) -> bool:
        if not self._fifo:
            return False
        if self._closed or self.max_delay_us == 0 or len(self._reqs) >= self.max_batch_size:
            return True
        if self._tokens >= self.max_batch_tokens:
            return True
        anchor = next(iter(self._fifo))
        return now >= self._reqs[anchor][1] + self.max_delay_us

    def _form(self) -> list[int]:
        ab = self._reqs[next(iter(self._fifo))][4]
        order = sorted(self._buckets, key=lambda b: (abs(b - ab), b))
        ids, tokens = [], 0
        for b in order:
            if len(ids) >= self.max_batch_size:
                break
            for rid in self._buckets[b]:
                n = self._reqs[rid][0]
                if tokens + n > self.max_batch_tokens:
                    break
                ids.append(rid)
                tokens += n
                if len(ids) == self.max_batch_size:
                    break
        for rid in ids:
            self._remove(rid)
        self._st["dispatched"] += len(ids)
        self._st["batches"] += 1
        return ids

    def _poll(self, now: int) -> tuple[list[int], list[int]]:
        expired = []
        while True:
            d = self._earliest_deadline()
            if d is None or d > now:
                break
            _, _, rid = heapq.heappop(self._deadlines)
            expired.append(rid)
            self._remove(rid)
            self._st["expired"] += 1
        return (self._form() if self._ready(now) else []), expired

    def poll(self, now_us: int = -1) -> tuple[list[int], list[int]]:
        with self._cv:
            return self._poll(_clock() if now_us < 0 else now_us)

    def next_batch(self, timeout_us: int = -1):
        with self._cv:
            limit = None if timeout_us < 0 else _clock() + timeout_us
            while True:
                now = _clock()
                batch, expired = self._poll(now)
                if batch or expired:
                    return batch, expired
                if self._closed and not self._fifo:
                    return None
                if limit is not None and now >= limit:
                    return [], []
                wake = limit
                if self._fifo:
                    t = self._reqs[next(iter(self._fifo))][1] + self.max_delay_us
                    wake = t if wake is None else min(wake, t)
                d = self._earliest_deadline()
                if d is not None:
                    wake = d if wake is None else min(wake, d)
                # Capped at an hour, as in C++ (and Condition.wait rejects huge timeouts).
                self._cv.wait(min(max(wake - now, 0) / 1e6, 3600.0) if wake is not None else 3600.0)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def drain(self) -> list[int]:
        with self._cv:
            ids = list(self._fifo)
            for rid in ids:
                self._remove(rid)
            self._st["drained"] += len(ids)
            return ids

    def stats(self) -> dict:
        with self._cv:
            return dict(queued=len(self._reqs), queued_tokens=self._tokens, closed=self._closed, **self._st)


_clock = now_us


def _cpp_module():
    try:
        from hlm_engine import _scheduler
    except ImportError:
        return None
    return _scheduler if hasattr(_scheduler, "Scheduler") else None  # an old placeholder build


_announced = set()


def resolve_impl(impl: str | None = None) -> str:
    """'cpp' | 'python'. An explicit 'cpp' that cannot be honoured raises; 'auto' falls back, logged."""
    impl = impl or os.environ.get("HLM_SCHEDULER", "auto")
    if impl not in ("auto", "cpp", "python"):
        raise ValueError(f"scheduler impl must be 'auto', 'cpp' or 'python', got {impl!r} "
                         f"(argument or $HLM_SCHEDULER)")
    if impl == "python":
        return "python"
    if _cpp_module() is None:
        if impl == "cpp":
            raise ImportError("the C++ scheduler hlm_engine._scheduler is not built: run "
                              "`python setup.py build_ext --inplace` (or use impl='python')")
        if "fallback" not in _announced:
            _announced.add("fallback")
            log.info("C++ scheduler not built (HLM_BUILD_EXT=0?): using the pure-Python twin")
        return "python"
    return "cpp"


class Scheduler:
    """Raising wrapper over a core (C++ or Python) that speaks status codes."""

    def __init__(self, max_batch_tokens: int = 8192, max_batch_size: int = 256, max_delay_us: int = 2000,
                 max_queued_requests: int = 10000, max_queued_tokens: int | None = None,
                 impl: str | None = None):
        self.impl = resolve_impl(impl)
        if self.impl not in _announced:
            _announced.add(self.impl)
            log.info("scheduler: %s", "C++ core (hlm_engine._scheduler)" if self.impl == "cpp" else "Python twin")
        max_queued_tokens = (1 << 62) if max_queued_tokens is None else max_queued_tokens
        cls = _cpp_module().Scheduler if self.impl == "cpp" else PyScheduler
        try:
            self.core = cls(max_batch_tokens, max_batch_size, max_delay_us, max_queued_requests, max_queued_tokens)
        except ValueError as e:  # pybind maps std::invalid_argument to ValueError too
            raise ValueError(f"Scheduler: {e}") from None
        self.max_batch_tokens, self.max_batch_size, self.max_delay_us = max_batch_tokens, max_batch_size, max_delay_us
        self.max_queued_requests, self.max_queued_tokens = max_queued_requests, max_queued_tokens
        # Bound methods, looked up once: the engine calls these on every request.
        self.cancel, self.close, self.drain, self.stats = (self.core.cancel, self.core.close, self.core.drain,
                                                           self.core.stats)

    def submit(self, req_id: int, n_tokens: int, deadline_us: int | None = None, now_us: int | None = None) -> None:
        s = self.core.submit(req_id, n_tokens, -1 if deadline_us is None else deadline_us,
                             -1 if now_us is None else now_us)
        if s != OK:
            raise self.error(s, req_id, n_tokens)

    def error(self, status: int, req_id: int, n_tokens: int) -> Exception:
        """The exception for a non-OK submit status (the engine sets it on a future)."""
        if status == QUEUE_FULL:
            st = self.core.stats()
            return QueueFull(f"queue full: {st['queued']} requests / {st['queued_tokens']} tokens queued "
                             f"(max_queued_requests={self.max_queued_requests}, "
                             f"max_queued_tokens={self.max_queued_tokens}); request of {n_tokens} tokens rejected")
        if status == BAD_TOKENS:
            return ValueError(f"request {req_id}: n_tokens={n_tokens} must be in [1, max_batch_tokens="
                              f"{self.max_batch_tokens}]")
        if status == DUPLICATE:
            return ValueError(f"request id {req_id} is already queued")
        if status == CLOSED:
            return SchedulerClosed("scheduler is closed")
        return RuntimeError(f"unknown scheduler status {status}")

    def poll(self, now_us: int | None = None) -> tuple[list[int], list[int]]:
        return self.core.poll(-1 if now_us is None else now_us)

    def next_batch(self, timeout_us: int | None = None):
        """Wait for (batch_ids, expired_ids); ([], []) on timeout; None once closed and empty."""
        return self.core.next_batch(-1 if timeout_us is None else timeout_us)
