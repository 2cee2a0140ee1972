"""The serving process of bench/test_served_load.py: the real student behind a Unix socket
(`hlm_engine.serving.socket_server`), in one of two modes, so both sides of the comparison share one transport:

    engine  - `Engine` (dynamic batching: tokenizer thread -> C++ scheduler -> model thread)
    serial  - one request at a time: a single thread runs `encoder.encode([text])` per request, in order

    python bench/served_load_server.py --mode engine --threads 2 --socket /tmp/s.sock [--max-batch-tokens ..]

Prints "READY" once warm and listening; then reads commands on stdin: "metrics" prints one JSON line
(the engine's metrics, {} in serial mode), "quit" (or EOF) stops.
"""
import argparse
import json
import os
import queue
import sys
import threading
from concurrent.futures import Future

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class SerialEncoder:
    """The unbatched baseline: `submit(text) -> Future`, computed one text at a time in arrival order."""

    def __init__(self, encoder):
        self.encoder = encoder
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._t = threading.Thread(target=self._loop, name="serial-model", daemon=True)
        self._t.start()

    def submit(self, text: str) -> Future:
        fut: Future = Future()
        self._q.put((text, fut))
        return fut

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            text, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self.encoder.encode([text], batch_size=1)[0])
            except Exception as e:
                fut.set_exception(e)

    def close(self) -> None:
        self._q.put(None)
        self._t.join()


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["engine", "serial"], required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--model", default="minilm")
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-delay-us", type=int, default=2000)
    p.add_argument("--max-queued-requests", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=1, help="engine model threads")
    p.add_argument("--tokenize-in-caller", type=int, default=1,
                   help="1: the socket thread tokenizes in submit() (no hand-off to the tokenizer thread)")
    a = p.parse_args(argv)

    import torch

    from hlm_engine import Encoder, Engine
    from hlm_engine.serving.socket_server import SocketServer
    torch.set_num_threads(a.threads)
    enc = Encoder.from_pretrained(a.model, backend="torch")
    warm = ["cordless drill", "outdoor patio furniture set with cushions", "led light bulbs"] * 22
    enc.encode(warm)
    for t in warm[:8]:
        enc.encode([t])
    if a.mode == "engine":
        backend = Engine(enc, max_batch_tokens=a.max_batch_tokens, max_batch_size=a.max_batch_size,
                         max_delay_us=a.max_delay_us, max_queued_requests=a.max_queued_requests,
                         workers=a.workers, tokenize_in_caller=bool(a.tokenize_in_caller))
        backend.encode(warm)
    else:
        backend = SerialEncoder(enc)
    server = SocketServer(backend.submit, a.socket)
    print("READY", flush=True)
    try:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "metrics":
                m = backend.metrics() if a.mode == "engine" else {}
                print(json.dumps(m), flush=True)
            elif cmd == "quit":
                break
    finally:
        server.close()
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
