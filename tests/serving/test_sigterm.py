"""`hlm serve --http` in a subprocess: SIGTERM while a request is in flight -> that request is answered in
full, new connections are refused, the process exits 0."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_in_flight_then_exits_0():
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # batches of one: 64 queries keep the server busy for a while after SIGTERM
    p = subprocess.Popen([sys.executable, "-m", "hlm_engine.cli", "serve", "--http", "--port", str(port),
                          "--query-model", "minilm", "--max-batch-size", "1", "--max-delay-us", "0",
                          "--threads", "1", "--log-level", "warning"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "HLM_API_KEY": ""})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert p.poll() is None, p.stdout.read().decode()
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        texts = [f"outdoor patio furniture set number {i} with cushions" for i in range(64)]
        res = {}
        t = threading.Thread(target=lambda: res.update(
            r=httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60)))
        t.start()
        while 'hlm_http_requests_in_flight 1.0' not in httpx.get(url + "/metrics").text:
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        t.join(60)
        r = res["r"]
        assert r.status_code == 200 and len(r.json()["data"]) == 64
        assert p.wait(30) == 0
        try:
            httpx.get(url + "/health", timeout=1)
            raise AssertionError("still accepting after SIGTERM")
        except httpx.TransportError:
            pass
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
