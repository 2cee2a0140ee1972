"""The batch-formation rule on a virtual clock (`poll(now_us)`), against both implementations."""
import threading

import pytest

from hlm_engine.serving import scheduler as S
from hlm_engine.serving.scheduler import QueueFull, Scheduler, SchedulerClosed, length_bucket


def make(impl, **kw):
    cfg = dict(max_batch_tokens=100, max_batch_size=8, max_delay_us=1000, max_queued_requests=100,
               max_queued_tokens=None)
    cfg.update(kw)
    return Scheduler(**cfg, impl=impl)


def test_length_bucket_same_in_both_and_half_octave():
    cpp = S._cpp_module()
    ns = list(range(0, 5000)) + [2**20 - 1, 2**20, 2**40 + 12345, 2**62]
    py = [length_bucket(n) for n in ns]
    if cpp is not None:
        assert py == [cpp.length_bucket(n) for n in ns]
    assert py[:9] == [0, 1, 2, 3, 4, 4, 5, 5, 6]
    assert all(a <= b for a, b in zip(py, py[1:]))          # monotone
    lo = {}
    for n in range(1, 5000):
        lo.setdefault(length_bucket(n), n)
        assert n <= 1.5 * lo[length_bucket(n)]              # within a bucket lengths differ <= 1.5x


def test_both_read_the_same_clock():
    cpp = S._cpp_module()
    if cpp is None:
        pytest.skip("C++ scheduler not built")
    assert abs(cpp.now_us() - S.now_us()) < 50_000  # CLOCK_MONOTONIC on both sides


def test_waits_for_the_anchor_delay(impl):
    s = make(impl)
    s.submit(1, 5, now_us=0)
    s.submit(2, 5, now_us=600)
    assert s.poll(999) == ([], [])
    assert s.poll(1000) == ([1, 2], [])   # arrival-anchored on the oldest request
    assert s.poll(5000) == ([], [])


def test_zero_delay_dispatches_at_once(impl):
    s = make(impl, max_delay_us=0)
    s.submit(1, 5, now_us=0)
    assert s.poll(0) == ([1], [])


def test_closes_at_max_batch_size(impl):
    s = make(impl, max_batch_size=3)
    for i in range(4):
        s.submit(i, 5, now_us=0)
    assert s.poll(0) == ([0, 1, 2], [])
    assert s.poll(10) == ([], [])         # one left: not full, waits for its delay
    assert s.poll(1000) == ([3], [])


def test_closes_at_token_budget(impl):
    s = make(impl, max_batch_tokens=10)
    s.submit(1, 6, now_us=0)
    assert s.poll(0) == ([], [])
    s.submit(2, 6, now_us=1)              # 12 >= 10 queued: a full batch exists
    assert s.poll(1) == ([1], [])         # 2 does not fit beside 1
    assert s.poll(1001) == ([2], [])       # 2 arrived at t=1


def test_groups_similar_lengths_and_keeps_order(impl):
    s = make(impl, max_batch_size=3)
    for i, n in enumerate([5, 40, 5, 40, 5]):
        s.submit(i, n, now_us=i)
    assert s.poll(5) == ([0, 2, 4], [])   # the anchor's bucket first, in submit order
    assert s.poll(1001) == ([1, 3], [])


def test_fills_from_nearest_buckets_shorter_first(impl):
    s = make(impl, max_batch_tokens=1000)
    # anchor 8 tokens (bucket 6); 6 tokens -> bucket 5, 12 -> bucket 7 (tie: shorter first), 100 far away
    for i, n in enumerate([8, 100, 12, 6, 9]):
        s.submit(i, n, now_us=0)
    assert [length_bucket(n) for n in (8, 100, 12, 6, 9)] == [6, 13, 7, 5, 6]
    assert s.poll(1000) == ([0, 4, 3, 2, 1], [])


def test_bucket_stops_at_first_request_that_does_not_fit(impl):
    s = make(impl, max_batch_tokens=25, max_delay_us=0)
    s.submit(1, 12, now_us=0)
    s.submit(2, 15, now_us=0)   # same bucket [12, 15], does not fit beside 1
    s.submit(3, 12, now_us=0)   # same bucket, would fit, but must not overtake 2
    assert s.poll(0) == ([1], [])
    assert s.poll(0) == ([2], [])
    assert s.poll(0) == ([3], [])


def test_deadlines_expire_and_are_never_dispatched(impl):
    s = make(impl)
    s.submit(1, 5, deadline_us=500, now_us=0)
    s.submit(2, 5, now_us=0)
    s.submit(3, 5, deadline_us=300, now_us=0)
    assert s.poll(200) == ([], [])
    assert s.poll(500) == ([], [3, 1])     # by deadline
    assert s.poll(1001) == ([2], [])       # 2 arrived at t=1
    st = s.stats()
    assert (st["expired"], st["dispatched"], st["queued"]) == (2, 1, 0)


def test_cancel(impl):
    s = make(impl)
    s.submit(1, 5, now_us=0)
    s.submit(2, 5, now_us=0)
    assert s.cancel(1) is True
    assert s.cancel(1) is False
    assert s.cancel(99) is False
    assert s.poll(1001) == ([2], [])       # 2 arrived at t=1       # the anchor moved on to 2 (arrival 0)
    assert s.stats()["cancelled"] == 1


def test_queue_full_is_immediate_and_recovers(impl):
    s = make(impl, max_queued_requests=2, max_queued_tokens=12, max_delay_us=0)
    s.submit(1, 5, now_us=0)
    s.submit(2, 5, now_us=0)
    with pytest.raises(QueueFull, match="max_queued_requests=2"):
        s.submit(3, 1, now_us=0)
    assert s.poll(0)[0] == [1, 2]
    s.submit(4, 10, now_us=0)
    with pytest.raises(QueueFull, match="max_queued_tokens=12"):
        s.submit(5, 3, now_us=0)
    assert s.stats()["rejected"] == 2


def test_bad_requests_raise_clear_errors(impl):
    s = make(impl)
    with pytest.raises(ValueError, match="n_tokens=0"):
        s.submit(1, 0)
    with pytest.raises(ValueError, match="max_batch_tokens=100"):
        s.submit(1, 101)
    s.submit(1, 5)
    with pytest.raises(ValueError, match="already queued"):
        s.submit(1, 5)
    with pytest.raises(ValueError, match="max_batch_size"):
        make(impl, max_batch_size=0)


def test_close_flushes_then_reports_closed(impl):
    s = make(impl, max_delay_us=10**9)
    s.submit(1, 5)
    s.submit(2, 5)
    s.close()
    with pytest.raises(SchedulerClosed):
        s.submit(3, 5)
    assert s.next_batch(10**6) == ([1, 2], [])   # ready at once after close, no delay
    assert s.next_batch(10**6) is None


def test_drain_returns_everything_in_order(impl):
    s = make(impl, max_delay_us=10**9)
    for i in (5, 3, 9):
        s.submit(i, i)
    assert s.drain() == [5, 3, 9]
    assert s.stats()["queued"] == 0


def test_next_batch_wakes_on_submit_timeout_and_close(impl):
    s = make(impl, max_delay_us=0)
    assert s.next_batch(1000) == ([], [])          # timeout with nothing queued
    got = []
    t = threading.Thread(target=lambda: got.append(s.next_batch()))
    t.start()
    s.submit(7, 3)
    t.join(10)
    assert not t.is_alive() and got == [([7], [])]
    t = threading.Thread(target=lambda: got.append(s.next_batch()))
    t.start()
    s.close()
    t.join(10)
    assert not t.is_alive() and got[-1] is None


def test_next_batch_returns_expired_while_waiting(impl):
    s = make(impl, max_delay_us=10**9)
    s.submit(1, 5, deadline_us=S.now_us() + 2000)
    assert s.next_batch(10**7) == ([], [1])        # woke for the deadline, not the 1000 s delay


def test_impl_selection(monkeypatch):
    with pytest.raises(ValueError, match="'auto', 'cpp' or 'python'"):
        Scheduler(impl="rust")
    monkeypatch.setenv("HLM_SCHEDULER", "python")
    assert Scheduler().impl == "python"
    monkeypatch.setattr(S, "_cpp_module", lambda: None)
    monkeypatch.setenv("HLM_SCHEDULER", "auto")
    assert Scheduler().impl == "python"             # falls back (logged)
    with pytest.raises(ImportError, match="build_ext"):
        Scheduler(impl="cpp")                       # an explicit request that cannot be honoured raises


def test_far_future_times_do_not_overflow(impl):
    s = make(impl, max_delay_us=2**62)
    s.submit(1, 5, deadline_us=2**62)
    assert s.next_batch(2000) == ([], [])          # waits (no spin, no overflow), then times out
    assert s.poll(2**62 - 1) == ([], [])
    s.close()
    assert s.next_batch(2**63 - 1) == ([1], [])
