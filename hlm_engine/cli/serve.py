"""`hlm serve`: a minimal line server over stdin/stdout in front of `Engine` (dynamic batching).

Each input line is one query, submitted as soon as it is read; each output line is a JSON object
{"line": i, "embedding": [...]} or {"line": i, "error": "..."}, in input order. Queries from a pipe
therefore batch together exactly as concurrent network requests would. --metrics prints the Prometheus
text to stderr at the end.

    printf 'cordless drill\\npatio set\\n' | hlm serve --model minilm
"""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("serve", help="encode queries from stdin through the batching engine (JSON lines out)")
    p.add_argument("--model", default="minilm", help="minilm | mpnet | model folder")
    p.add_argument("--backend", default=None, choices=["auto", "torch", "triton"])
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-delay-us", type=int, default=2000)
    p.add_argument("--max-queued-requests", type=int, default=10000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--deadline-ms", type=float, default=None, help="per-query deadline")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka truncation")
    p.add_argument("--prompt", default=None, help="prefix added to every query")
    p.add_argument("--metrics", action="store_true", help="print Prometheus metrics to stderr at the end")
    p.set_defaults(func=run)


def run(a):
    import json
    import queue
    import sys
    import threading

    from hlm_engine import Encoder, Engine

    enc = Encoder.from_pretrained(a.model, backend=a.backend)
    eng = Engine(enc, max_batch_tokens=a.max_batch_tokens, max_batch_size=a.max_batch_size,
                 max_delay_us=a.max_delay_us, max_queued_requests=a.max_queued_requests, workers=a.workers,
                 dim=a.dim, prompt=a.prompt)
    pending: queue.Queue = queue.Queue(maxsize=a.max_queued_requests)  # bounds memory on a fast pipe

    def writer():
        while (item := pending.get()) is not None:
            i, fut = item
            try:
                rec = {"line": i, "embedding": [round(float(x), 6) for x in fut.result()]}
            except Exception as e:  # one bad query fails its own line only
                rec = {"line": i, "error": f"{type(e).__name__}: {e}"}
            sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()

    w = threading.Thread(target=writer, name="hlm-serve-writer")
    w.start()
    try:
        for i, line in enumerate(sys.stdin):
            pending.put((i, eng.submit(line.rstrip("\n"), deadline_ms=a.deadline_ms)))
    finally:
        pending.put(None)
        w.join()
        eng.close()
    if a.metrics:
        sys.stderr.write(eng.metrics_text())
    return 0
