"""Hard-negative mining: rank window, judged products skipped, duplicate titles skipped, determinism."""
import numpy as np
import pytest

from hlm_engine.train.mining import mine_hard_negatives


def _setup(n=300, d=16, q=5, seed=0):
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((q, d)).astype(np.float32)
    return queries, docs


def test_window_and_skips():
    queries, docs = _setup()
    order = np.argsort(-(queries @ docs.T), axis=1)
    skip = [set(order[i, 10:40].tolist()) for i in range(len(queries))]  # judged: most of the window
    keys = np.arange(len(docs))
    keys[order[0, 50]] = keys[order[0, 60]]  # two rows share a title
    skip_keys = [set() for _ in queries]
    skip_keys[0] = {int(keys[order[0, 60]])}
    negs = mine_hard_negatives(queries, docs, 4, skip, lo=10, hi=100, seed=3, doc_keys=keys, skip_keys=skip_keys)
    assert negs.shape == (5, 4)
    for i in range(len(queries)):
        ranks = [int(np.where(order[i] == j)[0][0]) for j in negs[i]]
        assert all(10 <= r < 100 for r in ranks)
        assert not set(negs[i].tolist()) & skip[i]
        assert len(set(negs[i].tolist())) == 4
    assert order[0, 50] not in negs[0] and order[0, 60] not in negs[0]
    again = mine_hard_negatives(queries, docs, 4, skip, lo=10, hi=100, seed=3, doc_keys=keys, skip_keys=skip_keys)
    assert (again == negs).all()


def test_falls_back_to_deeper_ranks():
    queries, docs = _setup(n=40)
    negs = mine_hard_negatives(queries, docs, 8, [set() for _ in queries], lo=30, hi=33)
    assert negs.shape == (5, 8) and all(len(set(r)) == 8 for r in negs.tolist())


def test_errors():
    queries, docs = _setup(n=10)
    with pytest.raises(ValueError, match="too small"):
        mine_hard_negatives(queries, docs, 8, [set(range(5))] * 5)
    with pytest.raises(ValueError, match="lo < hi"):
        mine_hard_negatives(queries, docs, 2, [set()] * 5, lo=5, hi=5)
