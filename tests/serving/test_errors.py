"""Every error the service answers, from a plain HTTP client: OpenAI's {"error": {message, type, code}}, the
status by cause, and a message naming what was wrong."""
import httpx
import pytest


def _err(r, status, *needles):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "code"}
    for n in needles:
        assert n in e["message"], (n, e["message"])
    return e


@pytest.mark.parametrize("body, status, needles", [
    ({"input": ["drill", ""]}, 422, ["input[1]", "empty", "length 0"]),
    ({"input": ["drill", 7]}, 422, ["input[1]", "int"]),
    ({"input": []}, 422, ["empty list"]),
    ({"input": "drill", "model": "gpt-4"}, 400, ["unknown model 'gpt-4'", "all-MiniLM-L6-v2"]),
    ({"input": "drill", "input_type": "passage"}, 400, ["unknown input_type 'passage'"]),
    ({"input": "drill", "model": "minilm", "input_type": "document"}, 400, ["all-mpnet-base-v2 serves it"]),
    ({"input": "drill", "dimensions": 1000}, 400, ["dimensions", "[1, 384]"]),
    ({"input": "drill", "encoding_format": "int8"}, 400, ["encoding_format"]),
])
def test_bad_requests(http_url, body, status, needles):
    _err(httpx.post(http_url + "/v1/embeddings", json=body), status, *needles)


def test_bad_json_and_unknown_route(http_url):
    _err(httpx.post(http_url + "/v1/embeddings", content=b"{nope"), 400, "not valid JSON")
    _err(httpx.get(http_url + "/v1/nothing"), 404, "/v1/nothing")


def test_over_long_input(http_url, minilm):
    long = "drill " * 400   # 402 tokens with [CLS] and [SEP] > MiniLM's 256
    _err(httpx.post(http_url + "/v1/embeddings", json={"input": ["drill", long], "truncate": False}), 422,
         "input[1]", "402 tokens", "max_length 256")
    ok = httpx.post(http_url + "/v1/embeddings", json={"input": ["drill", long]})   # truncate=true: cut to 256
    assert ok.status_code == 200 and ok.json()["usage"]["total_tokens"] == 256 + 3
    exact = " ".join(["drill"] * 254)   # exactly 256 tokens with [CLS] and [SEP]: fits, truncate=false or not
    r = httpx.post(http_url + "/v1/embeddings", json={"input": exact, "truncate": False})
    assert r.status_code == 200 and r.json()["usage"]["total_tokens"] == 256
    _err(httpx.post(http_url + "/tokenize", json={"input": [long], "truncate": False}), 422, "input[0]", "402")


def test_client_batch_and_payload_limits(http_url, http_service, limits):
    limits(http_service, max_client_batch_size=4, payload_limit=2000)
    _err(httpx.post(http_url + "/v1/embeddings", json={"input": ["a"] * 5}), 413, "5 inputs", "4")
    _err(httpx.post(http_url + "/v1/embeddings", json={"input": "x" * 3000}), 413, "payload limit", "2000")

    def chunked():   # no Content-Length: the limit holds while reading
        yield b'{"input": "'
        for _ in range(30):
            yield b"y" * 100
        yield b'"}'
    _err(httpx.post(http_url + "/v1/embeddings", content=chunked()), 413, "payload limit")
    assert httpx.post(http_url + "/v1/embeddings", json={"input": ["a"] * 4}).status_code == 200


def test_api_key(http_url, http_service, limits):
    limits(http_service, api_key="s3cret")
    url = http_url + "/v1/embeddings"
    _err(httpx.post(url, json={"input": "drill"}), 401, "API key")
    _err(httpx.post(url, json={"input": "drill"}, headers={"Authorization": "Bearer wrong"}), 401)
    _err(httpx.get(http_url + "/v1/models"), 401)
    assert httpx.post(url, json={"input": "drill"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(http_url + "/health").status_code == 200   # probes stay open
