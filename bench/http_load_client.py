"""The HTTP load generator of bench/test_http_load.py, run as its own process (one per measurement), so it
never shares a GIL or an event loop with a server: asyncio on uvloop, raw HTTP/1.1 keep-alive connections
(no client library's per-request cost on the 2 cores the servers also use).

    python bench/http_load_client.py --url http://127.0.0.1:8080 [--path /v1/embeddings] --model minilm \\
        --queries q.json --mode open --rate 300 --seconds 5 --seed 1 [--connections 64]
    -> one JSON line on stdout: {"latency_s": [...], "throughput_qps", "requests", "errors", "late_send_p99_ms"}

Each request is OpenAI's `POST /v1/embeddings` with one query (`{"input": [q], "model": M, "encoding_format":
"float"}`), the online case. Modes:
    closed  every query queued at once over --connections connections -> completed / wall (capacity, q/s)
    ping    one request in flight at a time -> per-request latency (the service time)
    open    Poisson arrivals (drawn up front, seeded: `served_load_client.poisson_arrivals`); arrival i is
            sent on the first free connection; latency = response read - *scheduled* arrival, so a
            stalled server or a busy pool is charged in full (no coordinated omission);
            throughput = responses / (last response - first scheduled arrival)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from served_load_client import poisson_arrivals  # noqa: E402


class Conn:
    """One keep-alive HTTP/1.1 connection; `post` sends a request and reads the whole response."""

    def __init__(self, host: str, port: int, path: str):
        self.host, self.port, self.path = host, port, path
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"Connection: keep-alive\r\nContent-Length: ").encode()
        self.r = self.w = None

    async def open(self) -> "Conn":
        self.r, self.w = await asyncio.open_connection(self.host, self.port)
        return self

    async def post(self, body: bytes) -> tuple[int, bytes]:
        self.w.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        n = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                n = int(line[15:])
        return status, await self.r.readexactly(n)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


def _body(model: str, q: str) -> bytes:
    return json.dumps({"input": [q], "model": model, "encoding_format": "float"}).encode()


async def _conns(url: str, n: int) -> list[Conn]:
    """`url`: http://host:port/path of the embeddings route."""
    hostport, path = url.split("://", 1)[1].split("/", 1)
    host, port = hostport.rsplit(":", 1)
    return list(await asyncio.gather(*(Conn(host, int(port), "/" + path).open() for _ in range(n))))


async def closed(url, model, texts, connections) -> dict:
    conns = await _conns(url, connections)
    errors, nxt = [], iter(range(len(texts)))
    t0 = time.perf_counter()

    async def run(c):
        for i in nxt:
            st, body = await c.post(_body(model, texts[i]))
            if st != 200:
                errors.append(body[:200].decode("utf-8", "replace"))

    await asyncio.gather(*(run(c) for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    return {"throughput_qps": len(texts) / wall, "requests": len(texts), "errors": errors}


async def ping(url, model, texts) -> dict:
    (c,) = await _conns(url, 1)
    lat, errors = [], []
    for t in texts:
        t0 = time.perf_counter()
        st, body = await c.post(_body(model, t))
        lat.append(time.perf_counter() - t0)
        if st != 200:
            errors.append(body[:200].decode("utf-8", "replace"))
    c.close()
    return {"latency_s": lat, "requests": len(texts), "errors": errors}


async def open_loop(url, model, texts, rate, seconds, seed, connections) -> dict:
    arrivals = poisson_arrivals(rate, seconds, seed)
    n = len(arrivals)
    conns = await _conns(url, connections)
    free: asyncio.Queue = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)
    done_at, sent_late, errors = np.zeros(n), np.zeros(n), []
    bodies = [_body(model, texts[(i + seed * 7919) % len(texts)]) for i in range(n)]
    start = time.perf_counter() + 0.05

    async def one(i, c):
        try:
            st, body = await c.post(bodies[i])
            done_at[i] = time.perf_counter()
            if st != 200:
                errors.append(body[:200].decode("utf-8", "replace"))
        finally:
            free.put_nowait(c)

    tasks = []
    for i in range(n):
        delay = start + arrivals[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        c = await free.get()  # all connections busy: the wait is charged to this request's latency
        sent_late[i] = time.perf_counter() - (start + arrivals[i])
        tasks.append(asyncio.ensure_future(one(i, c)))
    await asyncio.gather(*tasks)
    for c in conns:
        c.close()
    sched = start + arrivals
    return {"latency_s": (done_at - sched).tolist(), "requests": n,
            "throughput_qps": n / (done_at.max() - sched[0]), "errors": errors,
            "late_send_p99_ms": float(np.percentile(sent_late, 99) * 1e3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--path", default="/v1/embeddings", help="the embeddings route (infinity: /embeddings)")
    p.add_argument("--queries", required=True, help="JSON list of query strings")
    p.add_argument("--mode", choices=["closed", "ping", "open"], required=True)
    p.add_argument("--n", type=int, default=None, help="closed/ping: how many queries")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--connections", type=int, default=64)
    a = p.parse_args(argv)
    url = a.url.rstrip("/") + a.path
    with open(a.queries) as f:
        texts = json.load(f)
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if a.mode == "closed":
        out = run(closed(url, a.model, texts[: a.n], a.connections))
    elif a.mode == "ping":
        out = run(ping(url, a.model, texts[: a.n]))
    else:
        out = run(open_loop(url, a.model, texts, a.rate, a.seconds, a.seed, a.connections))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
