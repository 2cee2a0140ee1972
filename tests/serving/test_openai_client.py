"""The official `openai` client against the service: floats, base64 (the client's default) and `dimensions`,
for both input types; the vectors equal the in-process encoder's (cos >= 0.99999), usage counts tokens."""
import base64

import numpy as np
import pytest

QUERIES = ["cordless drill", "outdoor patio furniture set with cushions", "led light bulbs 60 watt"]
DOCS = ["Pinegate Ultra Cover 1 gal. Sage Green Satin Exterior Paint and Primer in One",
        "20V MAX Lithium-Ion Cordless 1/2 in. Drill/Driver Kit"]


@pytest.fixture(scope="module")
def client(http_url):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=http_url + "/v1", api_key="unused", max_retries=0, timeout=30)


def _vectors(r) -> np.ndarray:
    """The response's vectors in input order; base64 asked for explicitly comes back undecoded (little-endian f32)."""
    rows = [d.embedding for d in sorted(r.data, key=lambda d: d.index)]
    return np.asarray([np.frombuffer(base64.b64decode(x), "<f4") if isinstance(x, str) else x for x in rows])


def _cos_min(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.mark.parametrize("fmt", ["float", "base64", None])   # None: the client asks for base64 and decodes
def test_query_embeddings_equal_in_process(client, minilm, fmt):
    kw = {"encoding_format": fmt} if fmt else {}
    r = client.embeddings.create(model="minilm", input=QUERIES, **kw)
    got = _vectors(r)
    ref = minilm.embed(QUERIES, role="query")
    assert got.shape == ref.shape and _cos_min(got, ref) >= 0.99999
    assert r.usage.prompt_tokens == r.usage.total_tokens == sum(len(x) for x in minilm.tokenize(QUERIES))
    assert r.model == "all-MiniLM-L6-v2"


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_document_embeddings_and_dimensions(client, mpnet, fmt):
    r = client.embeddings.create(model="mpnet", input=DOCS, encoding_format=fmt, dimensions=256,
                                 extra_body={"input_type": "document"})
    got = _vectors(r)
    ref = mpnet.embed(DOCS, role="document", dim=256)
    assert got.shape == (2, 256) and _cos_min(got, ref) >= 0.99999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)   # Matryoshka: truncated, then unit length


def test_single_string_and_query_dimensions(client, minilm):
    r = client.embeddings.create(model="all-MiniLM-L6-v2", input="cordless drill", dimensions=64,
                                 extra_body={"input_type": "query"})
    assert len(r.data) == 1 and _cos_min(_vectors(r), minilm.embed(["cordless drill"], dim=64)) >= 0.99999


def test_models_list(client, http_service):
    ms = {m.id: m for m in client.models.list().data}
    assert set(ms) == {"all-MiniLM-L6-v2", "all-mpnet-base-v2"}
    q, d = ms["all-MiniLM-L6-v2"].model_extra, ms["all-mpnet-base-v2"].model_extra
    assert (q["role"], q["dim"], d["role"], d["dim"]) == ("query", 384, "document", 768)
    assert q["space"] == http_service.engines["query"].space and q["index"]["count"] == 364
