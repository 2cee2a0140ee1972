"""/v1/search, /tokenize, /health, /ready, /metrics over plain HTTP; an index from another embedding space is
refused at start, naming both."""
import httpx
import numpy as np
import pytest


def test_search_matches_in_process_retriever(http_url, http_service, minilm, sample_index):
    from hlm_engine.retrieval.retriever import Retriever
    qs = ["exterior paint sage green", "cordless drill"]
    r = httpx.post(http_url + "/v1/search", json={"query": qs, "k": 3})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    ref = Retriever.load(sample_index, minilm).search(qs, k=3)
    assert [[h["id"] for h in row] for row in got] == [[d for d, _ in row] for row in ref]
    assert np.allclose([[h["score"] for h in row] for row in got], [[s for _, s in row] for row in ref], atol=1e-4)
    titles = http_service.retriever.doc_texts
    assert all(h["title"] == titles[h["id"]] and h["title"] for row in got for h in row)
    one = httpx.post(http_url + "/v1/search", json={"query": "cordless drill", "k": 1}).json()
    assert one["results"][0][0]["id"] == got[1][0]["id"] and one["usage"]["total_tokens"] > 0


def test_tokenize(http_url, minilm):
    r = httpx.post(http_url + "/tokenize", json={"input": ["cordless drill"]}).json()
    assert r["data"][0]["ids"] == minilm.tokenize(["cordless drill"])[0]
    assert r["data"][0]["tokens"][0] == "[CLS]" and r["usage"]["total_tokens"] == len(r["data"][0]["ids"])


def test_health_ready_metrics(http_url):
    assert httpx.get(http_url + "/health").json() == {"status": "ok"}
    assert httpx.get(http_url + "/ready").status_code == 200
    httpx.post(http_url + "/v1/embeddings", json={"input": "drill"})
    text = httpx.get(http_url + "/metrics").text
    for needle in ('hlm_http_requests_total{route="/v1/embeddings",status="200"}', "hlm_http_request_duration_seconds",
                   'hlm_queue_depth{role="query"}', 'hlm_queue_depth{role="document"}', "hlm_batch_size_bucket",
                   "hlm_batch_tokens_bucket", "hlm_tokenize_seconds", "hlm_queue_wait_seconds", "hlm_compute_seconds"):
        assert needle in text, needle


def test_index_from_another_space_is_refused(minilm, tmp_path):
    from hlm_engine.retrieval.index import build_index
    from hlm_engine.cli.http_service import build_service
    vecs = np.random.default_rng(0).standard_normal((8, 384)).astype(np.float32)
    build_index(vecs, [str(i) for i in range(8)], kind="flat", device="cpu",
                model={"name": "some-other-teacher", "checksum": "ab" * 32}).save(str(tmp_path / "idx"))
    with pytest.raises(ValueError, match=r"does not pair with --query-model all-MiniLM-L6-v2.*some-other-teacher"):
        build_service(minilm, index=str(tmp_path / "idx"), warmup=False)
