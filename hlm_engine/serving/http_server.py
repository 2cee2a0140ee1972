"""Running the HTTP service (`http_app.py`) on uvicorn: one process holds the models, one event loop serves.

    svc = build_service("minilm", document_model="mpnet", index="idx/", engine=dict(workers=2), limits=Limits())
    serve(svc, host="127.0.0.1", port=8080)          # blocks; SIGTERM/SIGINT: drain, then return 0
    with ServerThread(svc) as srv: srv.url           # the same server in a thread of this process (tests, tools)

Start-up order: models loaded, index paired (refused with both names when the spaces differ), every engine
warmed up, then the port opens, so /ready answers 200 from the first connection (503 again once draining).
SIGTERM: /ready turns 503, the listening socket closes (new connections are refused), requests in flight
finish and are answered, then the engines drain and close and the process exits 0 (uvicorn itself would
re-raise the signal after a graceful shutdown, exiting -15).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading

import uvicorn

from hlm_engine.serving.http_app import Limits, Service, create_app

log = logging.getLogger("hlm_engine.serving.http")


def load_titles(corpus: str | None, id_column: str = "product_id", text_column: str = "title") -> dict[str, str]:
    """doc id -> title from a TSV (default: $HLM_DATA_DIR/homedepot/products.tsv when present)."""
    from hlm_engine.retrieval.data import data_dir, read_tsv
    if corpus is None and data_dir():
        guess = os.path.join(data_dir(), "homedepot", "products.tsv")
        corpus = guess if os.path.exists(guess) else None
    if not corpus:
        return {}
    t = read_tsv(corpus, [id_column, text_column])
    return dict(zip(t[id_column], t[text_column]))


def build_service(query_model, document_model=None, index: str | None = None, corpus: str | None = None,
                  backend: str | None = "auto", engine: dict | None = None, limits: Limits | None = None,
                  warmup: bool = True) -> Service:
    """Load the models (names, folders or Encoders), start one Engine per role, pair the index with the query
    engine, warm up. `engine`: Engine keyword arguments shared by both roles."""
    from hlm_engine.encoder import Encoder
    from hlm_engine.serving.engine import Engine

    engines, names = {}, {}
    try:
        for role, model in (("query", query_model), ("document", document_model)):
            if model is None:
                continue
            enc = model if isinstance(model, Encoder) else Encoder.from_pretrained(os.fspath(model), backend=backend)
            engines[role] = Engine(enc, role=role, **(engine or {}))
            folder_name = os.path.basename((enc.folder or "").rstrip("/")) or enc.config.name or role
            names[role] = [folder_name] + ([model] if isinstance(model, str) and model != folder_name else [])
            mb = engines[role].scheduler.max_batch_tokens
            if mb < enc.max_length:
                log.warning("%s model %s: max_batch_tokens=%d < its max_length %d: inputs longer than %d tokens "
                            "are refused (422)", role, folder_name, mb, enc.max_length, mb)
        retriever = None
        if index is not None:
            from hlm_engine.retrieval.retriever import Retriever
            try:
                retriever = Retriever.load(index, engines["query"], doc_texts=load_titles(corpus))
            except ValueError as e:
                raise ValueError(f"--index {index} does not pair with --query-model {names['query'][0]} "
                                 f"(space {engines['query'].space['space'] or 'unknown'}): {e}") from None
        svc = Service(engines, names, retriever, limits)
        if warmup:
            svc.warmup()
        return svc
    except BaseException:
        for eng in engines.values():
            eng.close(drain=False)
        raise


class _Server(uvicorn.Server):
    """uvicorn's server, turning /ready off at the first signal and not re-raising the signal at the end."""

    def __init__(self, config, svc: Service):
        super().__init__(config)
        self.svc = svc

    def handle_exit(self, sig, frame) -> None:
        self.svc.draining = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in saved.items():
                signal.signal(s, h)


def _config(svc: Service, host: str, port: int, log_level: str, graceful_s: float | None) -> uvicorn.Config:
    # uvloop + httptools when installed ("auto"); no lifespan (the service is built before the port opens);
    # no access log (one line per request costs ~10% of a small request's CPU).
    return uvicorn.Config(create_app(svc), host=host, port=port, loop="auto", http="auto", lifespan="off",
                          access_log=False, log_level=log_level, timeout_graceful_shutdown=graceful_s,
                          backlog=2048, timeout_keep_alive=30)


def serve(svc: Service, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info",
          graceful_s: float | None = 60.0) -> int:
    """Serve until SIGTERM/SIGINT, then drain: in-flight requests are answered (up to graceful_s), the
    engines finish what they hold, exit status 0."""
    server = _Server(_config(svc, host, port, log_level, graceful_s), svc)
    try:
        server.run()
    finally:
        svc.close(drain=True)
    log.info("drained and stopped")
    return 0


class ServerThread:
    """The service on uvicorn in a background thread of this process, on a free port of `host`."""

    def __init__(self, svc: Service, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.svc = svc
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = _Server(_config(svc, host, self.port, log_level, 10.0), svc)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="hlm-http", daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        started = threading.Event()

        def poll():
            while not self.server.started and self.thread.is_alive():
                started.wait(0.01)
        poll()
        if not self.server.started:
            raise RuntimeError("HTTP server thread failed to start")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __exit__(self, *exc) -> None:
        self.stop()
