"""Against MiniLM slowed to 0.1 s per batch of <= 2 (`slow_service`): a flood past --max-concurrent-requests
gets 429s at once while every admitted request completes correctly; past --request-timeout-ms -> 504 and the
queued work is never computed; a client that disconnects cancels its own queued work."""
import asyncio
import socket
import time

import httpx
import numpy as np


def _metrics(svc) -> dict:
    return svc.engines["query"].metrics()


def test_flood_past_the_concurrency_limit(slow_url, slow_service, limits, minilm):
    limits(slow_service, max_concurrent_requests=3)
    texts = [f"cordless drill {i}" for i in range(12)]

    async def one(client, t):
        t0 = time.perf_counter()
        r = await client.post(slow_url + "/v1/embeddings", json={"input": t})
        return t, r, time.perf_counter() - t0

    async def flood():
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32), timeout=30) as c:
            return await asyncio.gather(*(one(c, t) for t in texts))

    out = asyncio.run(flood())
    ok = [(t, r) for t, r, _ in out if r.status_code == 200]
    busy = [(r, s) for _, r, s in out if r.status_code == 429]
    assert len(ok) + len(busy) == len(texts) and len(ok) >= 3 and busy
    for r, s in busy:
        assert r.headers["retry-after"] == "1" and "--max-concurrent-requests 3" in r.json()["error"]["message"]
        assert s < 0.5   # refused at once, not after queueing behind a 0.1 s batch
    got = np.asarray([r.json()["data"][0]["embedding"] for _, r in ok])
    assert np.allclose(got, minilm.embed([t for t, _ in ok]), atol=1e-5)
    assert slow_service.in_flight == 0


def test_timeout_skips_the_expired_work(slow_url, slow_service, limits):
    limits(slow_service, request_timeout_ms=150)
    m0 = _metrics(slow_service)
    # 8 queries = 4 batches of 0.1 s: the first two batches run, the rest expire in the queue
    r = httpx.post(slow_url + "/v1/embeddings", json={"input": [f"q{i}" for i in range(8)]}, timeout=10)
    assert r.status_code == 504 and "timed out" in r.json()["error"]["message"], r.text
    time.sleep(0.4)   # let the worker reach the expired requests
    m1 = _metrics(slow_service)
    computed = m1["completed"] - m0["completed"]
    skipped = (m1["expired"] - m0["expired"]) + (m1["cancelled"] - m0["cancelled"])
    assert computed <= 4 and computed + skipped >= 8 and skipped >= 4, (computed, skipped)


def test_disconnect_cancels_own_work(slow_url, slow_service):
    import json
    m0 = _metrics(slow_service)
    body = json.dumps({"input": [f"query {i}" for i in range(20)]}).encode()   # 10 batches = 1 s of work
    host, port = slow_url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.25)
    s.close()
    time.sleep(0.4)
    m1 = _metrics(slow_service)
    assert m1["cancelled"] - m0["cancelled"] >= 10 and m1["completed"] - m0["completed"] <= 8
    assert slow_service.in_flight == 0 and m1["queue_depth"] == 0
    # and the server still serves
    assert httpx.post(slow_url + "/v1/embeddings", json={"input": "drill"}).status_code == 200
