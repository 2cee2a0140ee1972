"""Engine behaviour on real encoders, with both schedulers: results, bad input, deadlines, cancellation,
backpressure, model faults, close(), metrics. Hangs are caught by bounded waits, never by timing asserts."""
import asyncio
import os
import threading

import numpy as np
import pytest

from hlm_engine import Encoder, Engine
from hlm_engine.serving.engine import EngineClosed, ModelError
from hlm_engine.serving.scheduler import DeadlineExceeded, QueueFull

QUERIES = ["cordless drill", "outdoor patio furniture set with cushions", "led light bulbs 60 watt equivalent",
           "x", "kitchen faucet with pull down sprayer brushed nickel", "deck screws", "garage door opener",
           "ceiling fan", "toilet", "2x4 lumber 8 ft pressure treated"]
WAIT = 60  # seconds: a bound that only a hang can reach


class Gated:
    """The real encoder behind a gate: `embed_ids` waits for `gate`, records what it computed, and raises
    for a batch holding a poisoned token sequence (a model fault on demand)."""

    def __init__(self, enc, poison=None):
        self.enc, self.poison = enc, poison
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()
        self.computed = []

    def __getattr__(self, name):
        return getattr(self.enc, name)

    def embed_ids(self, ids_list, normalize=True, dim=None):
        self.entered.set()
        assert self.gate.wait(WAIT)
        if self.poison is not None and self.poison in ids_list:
            raise RuntimeError("poisoned batch")
        self.computed.extend(tuple(x) for x in ids_list)
        return self.enc.embed_ids(ids_list, normalize, dim)


def blocked(enc, impl, **kw):
    """An engine whose worker is stuck inside the model on a first request (so later ones queue)."""
    g = Gated(enc)
    g.gate.clear()
    eng = Engine(g, scheduler=impl, max_delay_us=0, **kw)
    first = eng.submit("first request")
    assert g.entered.wait(WAIT)
    return eng, g, first


def submit_from_threads(eng, n_threads: int) -> list:
    """Every query of QUERIES submitted from each of n_threads threads; futures in (thread, query) order."""
    out = [None] * (n_threads * len(QUERIES))

    def client(k):
        for i, q in enumerate(QUERIES):
            out[k * len(QUERIES) + i] = eng.submit(q)
    ts = [threading.Thread(target=client, args=(k,)) for k in range(n_threads)]
    [t.start() for t in ts]
    [t.join(WAIT) for t in ts]
    return out


def test_results_match_direct_encode_from_many_threads(impl, minilm):
    ref = minilm.encode(QUERIES)
    with Engine(minilm, scheduler=impl, max_delay_us=1000) as eng:
        got = np.stack([f.result(WAIT) for f in submit_from_threads(eng, 4)])
        assert got.dtype == np.float32 and got.shape == (40, minilm.dim)
        np.testing.assert_allclose(got, np.tile(ref, (4, 1)), atol=1e-5)
        np.testing.assert_allclose(eng.encode(QUERIES), ref, atol=1e-5)
        np.testing.assert_allclose(asyncio.run(eng.aencode(QUERIES)), ref, atol=1e-5)
        assert eng.encode([]).shape == (0, minilm.dim)
        with pytest.raises(ValueError, match="single str"):
            eng.encode("cordless drill")


def test_bad_input_fails_only_its_future(impl):
    enc = Encoder.from_pretrained("minilm", backend="torch", truncation="raise", max_length=16)
    long = "cordless drill " * 20
    texts = ["hammer", "", None, 5, long, "   ", "nails"]
    with Engine(enc, scheduler=impl) as eng:
        futs = [eng.submit(t) for t in texts]
        bad = eng.submit("ok", deadline_ms=-1)
        errs = [f.exception(WAIT) for f in futs]
        assert errs[0] is None and errs[-1] is None
        np.testing.assert_allclose(np.stack([futs[0].result(), futs[-1].result()]),
                                   enc.encode(["hammer", "nails"]), atol=1e-5)
        assert all(isinstance(e, ValueError) for e in errs[1:-1])
        assert "empty" in str(errs[1]) and "NoneType" in str(errs[2]) and "int" in str(errs[3])
        assert "too long" in str(errs[4]) and "max_length=16" in str(errs[4])
        assert "deadline_ms" in str(bad.exception(WAIT))
        assert eng.metrics()["invalid"] == 6


def test_expired_request_fails_and_is_never_computed(impl, tiny_encoder):
    eng, g, first = blocked(tiny_encoder, impl)
    late = eng.submit("too late", deadline_ms=1)
    ok = eng.submit("in time", deadline_ms=60_000)
    ids_late = tiny_encoder.tokenize(["too late"])[0]
    threading.Event().wait(0.01)   # let the 1 ms deadline pass while the worker is busy
    g.gate.set()
    with pytest.raises(DeadlineExceeded, match="not computed"):
        late.result(WAIT)
    assert ok.result(WAIT).shape == (tiny_encoder.dim,) and first.result(WAIT) is not None
    assert tuple(ids_late) not in g.computed
    eng.close()
    assert eng.metrics()["expired"] == 1


def test_cancelled_request_is_skipped(impl, tiny_encoder):
    eng, g, first = blocked(tiny_encoder, impl)
    a, b, c = (eng.submit(t) for t in ("alpha saw", "bravo saw", "charlie saw"))
    assert b.cancel() and b.cancelled()
    g.gate.set()
    assert a.result(WAIT) is not None and c.result(WAIT) is not None
    eng.close()
    assert tuple(tiny_encoder.tokenize(["bravo saw"])[0]) not in g.computed
    assert len(g.computed) == 3 and eng.metrics()["cancelled"] == 1


def test_queue_full_raises_at_once_and_recovers(impl, tiny_encoder):
    eng, g, first = blocked(tiny_encoder, impl, max_queued_requests=3)
    futs = [eng.submit(f"query {i}") for i in range(3)]
    with pytest.raises(QueueFull, match="max_queued_requests=3"):
        eng.submit("one too many")
    assert eng.metrics()["rejected"] == 1
    g.gate.set()
    assert all(f.result(WAIT) is not None for f in futs)
    assert eng.encode([f"more {i}" for i in range(12)]).shape == (12, tiny_encoder.dim)  # waits, never drops
    eng.close()


def test_queue_full_by_tokens_fails_the_future(impl, tiny_encoder):
    eng, g, first = blocked(tiny_encoder, impl, max_queued_tokens=10)
    a = eng.submit("drill")                                 # 3 tokens with [CLS] [SEP]
    b = eng.submit("a rather long query with many words")   # 9 tokens: 3 + 9 > 10
    assert isinstance(b.exception(WAIT), QueueFull)
    g.gate.set()
    assert a.result(WAIT) is not None
    eng.close()


def test_model_fault_fails_only_its_batch(impl, tiny_encoder):
    poison = tiny_encoder.tokenize(["poison pill"])[0]
    g = Gated(tiny_encoder, poison=poison)
    with Engine(g, scheduler=impl, max_batch_size=1) as eng:
        bad = eng.submit("poison pill")
        err = bad.exception(WAIT)
        assert isinstance(err, ModelError) and "batch of 1" in str(err)
        assert isinstance(err.__cause__, RuntimeError) and "poisoned" in str(err.__cause__)
        np.testing.assert_allclose(eng.encode(QUERIES[:3]), tiny_encoder.encode(QUERIES[:3]), atol=1e-5)
        assert eng.metrics()["failed"] == 1


def test_close_drains_everything(impl, tiny_encoder):
    eng, g, first = blocked(tiny_encoder, impl)
    futs = [eng.submit(q) for q in QUERIES]
    closer = threading.Thread(target=eng.close)
    closer.start()
    g.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    np.testing.assert_allclose(np.stack([f.result(0) for f in futs]), tiny_encoder.encode(QUERIES), atol=1e-5)
    with pytest.raises(EngineClosed):
        eng.submit("after close")
    eng.close()  # idempotent


def test_close_without_drain_fails_pending(impl, tiny_encoder):
    eng, g, first = blocked(tiny_encoder, impl)
    futs = [eng.submit(q) for q in QUERIES]
    closer = threading.Thread(target=eng.close, kwargs={"drain": False})
    closer.start()
    errs = [f.exception(WAIT) for f in futs]   # failed while the worker is still stuck on `first`
    assert all(isinstance(e, EngineClosed) for e in errs)
    g.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert first.result(0) is not None          # the running batch still finishes


def test_metrics_dict_and_prometheus_text(impl, tiny_encoder):
    with Engine(tiny_encoder, scheduler=impl, workers=2) as e1, Engine(tiny_encoder, scheduler=impl) as e2:
        e1.encode(QUERIES)
        e2.encode(QUERIES[:2])
        m = e1.metrics()
        assert m["scheduler"] == impl and m["requests"] == m["completed"] == len(QUERIES)
        assert m["batch_size"]["sum"] == len(QUERIES) and m["batch_tokens"]["count"] >= 1
        assert m["queue_wait_seconds"]["count"] == len(QUERIES) and m["compute_seconds"]["count"] >= 1
        assert m["queue_depth"] == 0 and m["rejected"] == m["expired"] == m["failed"] == 0
        text = e1.metrics_text()
        assert "hlm_requests_total 10.0" in text and "hlm_batch_tokens_bucket" in text
        assert "hlm_requests_total 2.0" in e2.metrics_text()   # private registries: no clash


def test_python_twin_via_environment(monkeypatch, tiny_encoder):
    monkeypatch.setenv("HLM_SCHEDULER", "python")
    with Engine(tiny_encoder) as eng:
        assert eng.metrics()["scheduler"] == "python" and "python" in repr(eng)


@pytest.mark.skipif(not os.environ.get("HLM_DATA_DIR"), reason="HLM_DATA_DIR not set")
def test_real_dev_queries(impl, minilm, homedepot_dev):
    qs = list(homedepot_dev.queries[:64])
    with Engine(minilm, scheduler=impl, max_batch_size=16) as eng:
        np.testing.assert_allclose(eng.encode(qs), minilm.encode(qs), atol=1e-5)
