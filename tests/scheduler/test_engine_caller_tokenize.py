"""Engine(tokenize_in_caller=True): submit() tokenizes and schedules in the caller's thread. The same contract
as the tokenizer-thread path: results, per-request failures, backpressure, deadlines, and close() computing
every request accepted before it (even with submitters racing it, or close() called from inside one)."""
import threading

import numpy as np
import pytest

from hlm_engine import Encoder, Engine
from hlm_engine.serving.engine import EngineClosed
from hlm_engine.serving.scheduler import DeadlineExceeded, QueueFull
from tests.scheduler.test_engine import QUERIES, WAIT, blocked, submit_from_threads


def test_results_match_direct_encode_from_many_threads(impl, tiny_encoder):
    ref = tiny_encoder.encode(QUERIES)
    with Engine(tiny_encoder, scheduler=impl, max_delay_us=500, tokenize_in_caller=True) as eng:
        out = submit_from_threads(eng, 4)
        np.testing.assert_allclose(np.stack([f.result(WAIT) for f in out]), np.tile(ref, (4, 1)), atol=1e-5)
        m = eng.metrics()
        assert m["requests"] == m["completed"] == 4 * len(QUERIES) and "tokenize_in_caller=True" in repr(eng)


def test_bad_input_fails_only_its_future(impl):
    enc = Encoder.from_pretrained("minilm", backend="torch", truncation="raise", max_length=16)
    with Engine(enc, scheduler=impl, tokenize_in_caller=True) as eng:
        futs = [eng.submit(t) for t in ("hammer", "cordless drill " * 20, "   ", "nails")]
        errs = [f.exception(WAIT) for f in futs]
        assert errs[0] is None and errs[3] is None
        assert "too long" in str(errs[1]) and "empty" in str(errs[2])
        assert eng.metrics()["invalid"] == 2


def test_backpressure_and_deadlines(impl, tiny_encoder):
    eng, g, first = blocked(tiny_encoder, impl, max_queued_requests=3, max_queued_tokens=10,
                            tokenize_in_caller=True)
    a = eng.submit("drill")                                   # 3 tokens
    b = eng.submit("a rather long query with many words")     # 9 tokens: 3 + 9 > 10
    assert isinstance(b.exception(0), QueueFull)              # known once submit() returns
    late = eng.submit("saw", deadline_ms=1)
    c = eng.submit("nails")                                   # 3 + 3 + 3 tokens; 3 requests queued
    with pytest.raises(QueueFull, match="max_queued_requests=3"):
        eng.submit("one too many")
    threading.Event().wait(0.01)   # let the 1 ms deadline pass while the worker is busy
    g.gate.set()
    assert all(f.result(WAIT) is not None for f in (a, c, first))
    with pytest.raises(DeadlineExceeded):
        late.result(WAIT)
    eng.close()


def test_close_computes_everything_accepted_while_submitters_race_it(impl, tiny_encoder):
    eng = Engine(tiny_encoder, scheduler=impl, tokenize_in_caller=True)
    accepted, go = [], threading.Event()

    def submitter(k):
        go.wait()
        for i in range(200):
            try:
                accepted.append(eng.submit(f"{QUERIES[i % len(QUERIES)]} {k}"))
            except EngineClosed:
                return

    ts = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    [t.start() for t in ts]
    go.set()
    threading.Event().wait(0.005)
    eng.close()
    [t.join(WAIT) for t in ts]
    assert accepted and all(f.result(WAIT).shape == (tiny_encoder.dim,) for f in accepted)


def test_close_from_a_callback_inside_submit_does_not_hang(impl):
    """A too-long text fails inside submit() (caller thread); its done-callback closes the engine, so close()
    runs inside that submit(): it must not wait for its own admission."""
    enc = Encoder.from_pretrained("minilm", backend="torch", truncation="raise", max_length=16)
    eng = Engine(enc, scheduler=impl, tokenize_in_caller=True)
    ok = eng.submit("hammer")
    admit = eng._admit

    def admit_then_close(items):  # the callback must be attached before the failure is set
        for it in items:
            it[2].add_done_callback(lambda _: eng.close())
        return admit(items)

    eng._admit = admit_then_close
    t = threading.Thread(target=eng.submit, args=("cordless drill " * 20,))
    t.start()
    t.join(WAIT)
    assert not t.is_alive()
    assert ok.result(WAIT) is not None   # accepted before close: computed
    with pytest.raises(EngineClosed):
        eng.submit("after close")
