"""Engine tests run torch on one intra-op thread by default ($HLM_TEST_THREADS overrides).

Why: CI and the dev box share 2 cores between several jobs. With 2 OpenMP threads on an oversubscribed
machine every small op (LayerNorm, GELU on a few tokens) waits at a barrier for a descheduled thread, and we
measured batch-1 MPNet forwards 5x slower than with 1 thread. The tests check numbers, not speed, and the
results do not depend on the thread count beyond float reassociation (far below the 0.99999 cosine bars).
"""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _engine_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("HLM_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)
