"""`hlm serve`: a minimal line server over stdin/stdout in front of `Engine` (dynamic batching).

Each input line is one query, submitted as soon as it is read; each output line is a JSON object
{"line": i, "embedding": [...]} or {"line": i, "error": "..."}, in input order. Queries from a pipe
therefore batch together exactly as concurrent network requests would. --metrics prints the Prometheus
text to stderr at the end.

    printf 'cordless drill\\npatio set\\n' | hlm serve --model minilm

--http serves the pair over HTTP instead (`hlm_engine.serving.http_app`: OpenAI-compatible /v1/embeddings,
/v1/search, /tokenize, /v1/models, /health, /ready, /metrics) until SIGTERM:

    hlm serve --http --port 8080 --query-model minilm --document-model mpnet --index idx/ --api-key K
"""
from __future__ import annotations

import os


def register(sub):
    p = sub.add_parser("serve", help="serve the engine: stdin lines (JSON out) or HTTP (--http)")
    p.add_argument("--model", "--query-model", dest="model", default="minilm",
                   help="(query) model: minilm | mpnet | model folder")
    p.add_argument("--backend", default=None, choices=["auto", "torch", "cpu", "triton"])
    p.add_argument("--weights", default=None, choices=["fp32", "bf16", "int8"],
                   help="CPU weight format of the query model's native forward (default: the model's, else fp32)")
    p.add_argument("--max-batch-tokens", type=int, default=8192)
    p.add_argument("--max-batch-size", type=int, default=256)
    p.add_argument("--max-delay-us", type=int, default=2000)
    p.add_argument("--max-queued-requests", type=int, default=10000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--deadline-ms", type=float, default=None, help="per-query deadline (line mode)")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka truncation (line mode)")
    p.add_argument("--prompt", default=None, help="prefix added to every query (line mode)")
    p.add_argument("--metrics", action="store_true", help="print Prometheus metrics to stderr at the end (line mode)")
    h = p.add_argument_group("HTTP mode")
    h.add_argument("--http", action="store_true", help="serve over HTTP instead of stdin lines")
    h.add_argument("--host", default="127.0.0.1")
    h.add_argument("--port", type=int, default=8080)
    h.add_argument("--document-model", default=None, help="the teacher, for input_type=document")
    h.add_argument("--index", default=None, help="index folder for /v1/search (must be in the query model's space)")
    h.add_argument("--corpus", default=None, help="TSV of ad titles for search hits (default: "
                   "$HLM_DATA_DIR/homedepot/products.tsv if present)")
    h.add_argument("--api-key", default=os.environ.get("HLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $HLM_API_KEY; none: open)")
    h.add_argument("--max-concurrent-requests", type=int, default=512, help="more in flight -> 429 at once")
    h.add_argument("--max-client-batch-size", type=int, default=256, help="more inputs in one request -> 413")
    h.add_argument("--request-timeout-ms", type=float, default=30_000.0, help="-> 504; expired work never runs")
    h.add_argument("--payload-limit", type=int, default=2_000_000, help="request body bytes; more -> 413")
    h.add_argument("--tokenize-in-caller", action="store_true",
                   help="tokenize on the event loop at submit instead of the engine's tokenizer thread (off: "
                   "measured ~150 us more event-loop CPU per request than the hand-off)")
    h.add_argument("--log-level", default="info")
    p.set_defaults(func=run)


def run(a):
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    if a.http:
        return run_http(a)
    if a.document_model or a.index:
        raise ValueError("--document-model and --index need --http")
    import json
    import queue
    import sys
    import threading

    from hlm_engine import Encoder, Engine

    enc = Encoder.from_pretrained(a.model, backend=a.backend, weights=a.weights)
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


def run_http(a):
    if a.dim is not None or a.prompt is not None or a.deadline_ms is not None or a.metrics:
        raise ValueError("--dim, --prompt, --deadline-ms and --metrics are line-mode options: over HTTP a request "
                         "asks for `dimensions`, the role's prompt applies, --request-timeout-ms bounds each "
                         "request and GET /metrics serves the metrics")
    for name in ("max_concurrent_requests", "max_client_batch_size", "payload_limit"):
        if getattr(a, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    from hlm_engine.serving.http_app import Limits
    from hlm_engine.cli.http_service import build_service
    from hlm_engine.serving.http_server import serve

    limits = Limits(max_concurrent_requests=a.max_concurrent_requests, max_client_batch_size=a.max_client_batch_size,
                    payload_limit=a.payload_limit, api_key=a.api_key or None,
                    request_timeout_ms=a.request_timeout_ms if a.request_timeout_ms > 0 else None)
    engine = dict(max_batch_tokens=a.max_batch_tokens, max_batch_size=a.max_batch_size, max_delay_us=a.max_delay_us,
                  max_queued_requests=a.max_queued_requests, workers=a.workers,
                  tokenize_in_caller=a.tokenize_in_caller)
    svc = build_service(a.model, a.document_model, a.index, a.corpus, backend=a.backend or "auto", engine=engine,
                        limits=limits, weights=a.weights)
    return serve(svc, a.host, a.port, log_level=a.log_level)
