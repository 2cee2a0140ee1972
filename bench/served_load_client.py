"""Load generation for bench/test_served_load.py, in the benchmark's own process (the server is another
process: `served_load_server.py`), over `hlm_engine.serving.socket_server`'s wire format.

    srv = ServerProcess("engine", threads=2, socket_path=..., workers=1).wait_ready()
    thr = closed_loop(srv.path, texts)                       # everything queued at once: capacity (q/s)
    lat = ping_pong(srv.path, texts)                         # one request in flight: service time (s)
    res = open_loop(srv.path, texts, rate=300, seconds=6)    # Poisson arrivals from many client threads
    srv.metrics(); srv.close()

open_loop: arrival times are drawn up front (exponential gaps, seeded); client thread k sends arrivals
k, k + clients, ... each at its scheduled time on its own connection; one receiver thread stamps replies.
latency = reply received - *scheduled* arrival, so a late send or a stalled server is charged in full
(no coordinated omission); throughput = replies / (last reply - first scheduled arrival).
"""
from __future__ import annotations

import json
import os
import random
import selectors
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from hlm_engine.serving.socket_server import OK, encode_request, parse_replies

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "served_load_server.py")


class ServerProcess:
    def __init__(self, mode: str, threads: int, socket_path: str, env: dict | None = None, **engine_cfg):
        """`engine_cfg`: served_load_server.py flags (max_batch_tokens=..., workers=...)."""
        args = [sys.executable, SERVER, "--mode", mode, "--threads", str(threads), "--socket", socket_path]
        for k, v in engine_cfg.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.path, self.mode = socket_path, mode
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self) -> "ServerProcess":
        """Block until the server printed READY (model loaded, warm, listening)."""
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            raise RuntimeError(f"{self.mode} server failed to start (got {line!r}; rc={self.proc.poll()})")
        return self

    def metrics(self) -> dict:
        self.proc.stdin.write("metrics\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


class _Receiver(threading.Thread):
    """Reads every connection until `n` replies arrived; done_at[id] = perf_counter() at receipt."""

    def __init__(self, socks, n: int, timeout: float):
        super().__init__(name="loadgen-recv", daemon=True)
        self.socks, self.n, self.timeout = socks, n, timeout
        self.done_at = np.zeros(n)
        self.errors: list[str] = []
        self.got = 0

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        bufs = {}
        for s in self.socks:
            sel.register(s, selectors.EVENT_READ)
            bufs[s] = bytearray()
        limit = time.perf_counter() + self.timeout
        while self.got < self.n and time.perf_counter() < limit:
            for key, _ in sel.select(timeout=0.5):
                data = key.fileobj.recv(1 << 18)
                now = time.perf_counter()
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                buf += data
                for rid, status, payload in parse_replies(buf):
                    self.done_at[rid] = now
                    self.got += 1
                    if status != OK:
                        self.errors.append(payload.decode("utf-8", "replace"))
        sel.close()


def closed_loop(path: str, texts: list[str], conns: int = 4, timeout: float = 300.0) -> float:
    """Queue every text at once (pipelined over `conns` connections) -> completed / wall (q/s)."""
    socks = [_connect(path) for _ in range(conns)]
    try:
        rx = _Receiver(socks, len(texts), timeout)
        rx.start()
        t0 = time.perf_counter()
        frames = [bytearray() for _ in socks]
        for i, t in enumerate(texts):
            frames[i % conns] += encode_request(i, t)
        for s, f in zip(socks, frames):
            s.sendall(f)
        rx.join()
        _check(rx)
        return len(texts) / (rx.done_at.max() - t0)
    finally:
        for s in socks:
            s.close()


def ping_pong(path: str, texts: list[str], timeout: float = 300.0) -> np.ndarray:
    """One request in flight at a time -> per-request latency (s): the server's service time."""
    s = _connect(path)
    s.settimeout(timeout)
    lat, buf = [], bytearray()
    try:
        for i, t in enumerate(texts):
            t0 = time.perf_counter()
            s.sendall(encode_request(i, t))
            reps = []
            while not reps:
                buf += s.recv(1 << 16)
                reps = parse_replies(buf)
            lat.append(time.perf_counter() - t0)
            if reps[0][1] != OK:
                raise RuntimeError(reps[0][2].decode())
    finally:
        s.close()
    return np.asarray(lat)


def poisson_arrivals(rate: float, seconds: float, seed: int) -> np.ndarray:
    r = random.Random(seed)
    out, t = [], r.expovariate(rate)
    while t < seconds:
        out.append(t)
        t += r.expovariate(rate)
    return np.asarray(out)


def open_loop(path: str, texts: list[str], rate: float, seconds: float, seed: int = 0, clients: int = 16,
              timeout: float = 120.0) -> dict:
    """Open-loop Poisson load -> {"latency_s": [n], "throughput_qps", "requests", "late_send_p99_ms"}."""
    arrivals = poisson_arrivals(rate, seconds, seed)
    n = len(arrivals)
    socks = [_connect(path) for _ in range(clients)]
    sent_late = np.zeros(n)
    try:
        rx = _Receiver(socks, n, timeout + seconds)
        rx.start()
        start = time.perf_counter() + 0.05

        def client(k):
            s = socks[k]
            for i in range(k, n, clients):
                due = start + arrivals[i]
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                s.sendall(encode_request(i, texts[(i + seed * 7919) % len(texts)]))
                sent_late[i] = time.perf_counter() - due

        ts = [threading.Thread(target=client, args=(k,), name=f"loadgen-{k}") for k in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rx.join()
        _check(rx)
    finally:
        for s in socks:
            s.close()
    sched = start + arrivals
    lat = rx.done_at - sched
    return {"latency_s": lat, "requests": n, "throughput_qps": n / (rx.done_at.max() - sched[0]),
            "late_send_p99_ms": float(np.percentile(sent_late, 99) * 1e3)}


def _check(rx: _Receiver) -> None:
    if rx.got < rx.n:
        raise TimeoutError(f"only {rx.got} of {rx.n} replies arrived")
    if rx.errors:
        raise RuntimeError(f"{len(rx.errors)} requests failed, e.g. {rx.errors[0]}")
