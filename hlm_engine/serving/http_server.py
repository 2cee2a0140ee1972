"""Running the HTTP service (`http_app.py`) on uvicorn: one process holds the models, one event loop serves.

    svc = build_service("minilm", document_model="mpnet", index="idx/", engine=dict(workers=2), limits=Limits())
    # (build_service: hlm_engine.cli.http_service, which composes the engines with the retrieval layer)
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
import gc
import logging
import signal
import socket
import threading
import time

import uvicorn

from hlm_engine.serving.http_app import Service, create_app

log = logging.getLogger("hlm_engine.serving.http")


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
    # The ~300k objects of the loaded models and libraries leave the collector's reach: its full passes (run
    # on the event loop's thread as requests allocate) then walk only what serving creates.
    gc.collect()
    gc.freeze()
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
        while not self.server.started and self.thread.is_alive():
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("HTTP server thread failed to start")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __exit__(self, *exc) -> None:
        self.stop()
