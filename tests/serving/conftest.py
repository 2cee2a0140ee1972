"""The HTTP service on 127.0.0.1, started by the tests on a free port, in a thread of the test process.

`http_service`: the real pair (MiniLM for queries, MPNet for documents, the session's encoders) and a flat
index over the packaged sample products encoded by MiniLM itself (its own space), served once for the
session. `slow_service`: MiniLM behind an encoder that sleeps before every batch, so queueing, timeouts,
disconnects and floods are deterministic. `limits` changes a service's limits for one test only.
"""
import dataclasses
import os
import time

import pytest

import hlm_engine

SAMPLE = os.path.join(os.path.dirname(hlm_engine.__file__), "sample_data")
PRODUCTS = os.path.join(SAMPLE, "products.tsv")


class SlowEncoder:
    """An Encoder whose every batch first sleeps `delay_s` (time the worker is busy, without CPU)."""

    def __init__(self, enc, delay_s: float):
        self._enc, self.delay_s = enc, delay_s

    def __getattr__(self, name):
        return getattr(self._enc, name)

    def embed_ids(self, ids_list, normalize=True, dim=None):
        time.sleep(self.delay_s)
        return self._enc.embed_ids(ids_list, normalize, dim)


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, minilm):
    """A flat index over the 364 sample product titles, encoded by MiniLM (queries pair with it)."""
    from hlm_engine.retrieval.corpus import encode_corpus
    from hlm_engine.retrieval.data import read_tsv
    from hlm_engine.retrieval.index import build_index_from_embeddings_dir
    d = tmp_path_factory.mktemp("http-index")
    t = read_tsv(PRODUCTS, ["product_id", "title"])
    encode_corpus(minilm, t["product_id"], t["title"], str(d / "emb"), show_progress=False)
    build_index_from_embeddings_dir(str(d / "emb"), kind="flat", out_dir=str(d / "idx"), device="cpu")
    return str(d / "idx")


@pytest.fixture(scope="session")
def http_service(minilm, mpnet, sample_index):
    from hlm_engine.serving.http_app import Limits
    from hlm_engine.cli.http_service import build_service
    svc = build_service(minilm, mpnet, index=sample_index, corpus=PRODUCTS,
                        engine=dict(max_delay_us=500, workers=1), limits=Limits(request_timeout_ms=20_000))
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def http_url(http_service):
    from hlm_engine.serving.http_server import ServerThread
    with ServerThread(http_service) as srv:
        yield srv.url


@pytest.fixture(scope="session")
def slow_service(minilm):
    """MiniLM at 0.1 s per batch of at most 2 queries (max_delay_us=0: a lone query runs at once)."""
    from hlm_engine.serving.engine import Engine
    from hlm_engine.serving.http_app import Limits, Service
    eng = Engine(SlowEncoder(minilm, 0.1), max_batch_size=2, max_delay_us=0, role="query")
    svc = Service({"query": eng}, {"query": ["slow-minilm"]}, limits=Limits())
    svc.ready = True
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def slow_url(slow_service):
    from hlm_engine.serving.http_server import ServerThread
    with ServerThread(slow_service) as srv:
        yield srv.url


@pytest.fixture
def limits():
    """set(service, **fields): change that service's limits for this test; restored afterwards."""
    saved = []

    def set_(svc, **fields):
        saved.append((svc, svc.limits))
        svc.limits = dataclasses.replace(svc.limits, **fields)

    yield set_
    for svc, old in reversed(saved):
        svc.limits = old
