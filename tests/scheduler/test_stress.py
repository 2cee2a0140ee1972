"""Stress: 8 client threads x 5,000 submissions with random lengths, deadlines and cancellations.

Every future resolves exactly once; every computed result equals the encoder's direct `encode`; no
request is lost or duplicated (outcome counts add up, and the model saw exactly the completed ones);
the run ends within a bound (a hang fails the bounded wait, it is not a timing assertion)."""
import random
import threading
from concurrent.futures import CancelledError, wait

import numpy as np

from hlm_engine import Engine
from hlm_engine.serving.scheduler import DeadlineExceeded

THREADS, PER_THREAD, POOL = 8, 5000, 600
BOUND_S = 300


def make_pool(rng):
    words = ("drill cordless saw bit hammer nail screw deck patio light bulb led faucet kitchen sink toilet "
             "door lock paint white brush tile floor vinyl wood stain cabinet shelf grill mower hose pipe "
             "valve fan ceiling outlet switch wire copper").split()
    texts = {" ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 3, 5, 8, 13, 40])))
             for _ in range(3 * POOL)}
    return sorted(texts)[:POOL]


def test_stress_many_threads(impl, tiny_encoder, one_torch_thread):
    rng = random.Random(1234)
    pool = make_pool(rng)
    ref = tiny_encoder.encode(pool)
    resolved = [0] * (THREADS * PER_THREAD)
    records = [None] * (THREADS * PER_THREAD)   # (text index, future, deadline_ms, cancel_returned)
    lock = threading.Lock()

    def on_done(slot):
        def cb(_):
            with lock:
                resolved[slot] += 1
        return cb

    with Engine(tiny_encoder, scheduler=impl, max_batch_tokens=2048, max_batch_size=128, max_delay_us=500,
                max_queued_requests=THREADS * PER_THREAD, workers=2) as eng:
        def client(k):
            r = random.Random(k)
            for j in range(PER_THREAD):
                slot = k * PER_THREAD + j
                i = r.randrange(POOL)
                u = r.random()
                deadline = r.choice([0, 0.5, 2, 20]) if u < 0.15 else None
                fut = eng.submit(pool[i], deadline_ms=deadline)
                fut.add_done_callback(on_done(slot))
                cancelled = fut.cancel() if 0.15 <= u < 0.22 else None
                records[slot] = (i, fut, deadline, cancelled)

        ts = [threading.Thread(target=client, args=(k,)) for k in range(THREADS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(BOUND_S)
        assert not any(t.is_alive() for t in ts), "client threads hung in submit"
        _, not_done = wait([r[1] for r in records], timeout=BOUND_S)
        assert not not_done, f"{len(not_done)} futures never resolved (deadlock?)"
        m = eng.metrics()
    assert eng.scheduler.stats()["queued"] == 0

    n_ok = n_expired = n_cancelled = 0
    got, want = [], []
    for i, fut, deadline, cancelled in records:
        if fut.cancelled():
            assert cancelled is True
            n_cancelled += 1
            continue
        try:
            got.append(fut.result(0))
            want.append(i)
            n_ok += 1
        except DeadlineExceeded:
            assert deadline is not None
            n_expired += 1
        except CancelledError:  # pragma: no cover - covered by fut.cancelled() above
            raise
    assert resolved == [1] * len(records)                       # each future resolved exactly once
    assert n_ok + n_expired + n_cancelled == THREADS * PER_THREAD
    np.testing.assert_allclose(np.stack(got), ref[want], atol=1e-5)
    assert m["completed"] == n_ok and m["expired"] == n_expired and m["cancelled"] == n_cancelled
    assert m["batch_size"]["sum"] == n_ok                       # the model saw each completed one once
    assert m["rejected"] == m["failed"] == m["invalid"] == 0
    assert n_expired > 0 and n_cancelled > 0 and m["batch_size"]["mean"] > 1
