"""The HTTP service of the asymmetric pair (Starlette on an ASGI server; `http_server.py` runs it):

    POST /v1/embeddings   OpenAI's schema (+ input_type query|document, truncate) -> vectors and token usage
    POST /v1/search       {"query": str | [str], "k": int} -> per query [{"id", "score", "title"}]
    POST /tokenize        {"input": str | [str], "input_type"?, "truncate"?} -> token ids / tokens per input
    GET  /v1/models  /health  /ready  /metrics

    app = create_app(Service({"query": engine, "document": engine2}, names=..., retriever=r, limits=Limits()))

The event loop never runs a model: a route submits each text to its role's `Engine` (`aembed`: the
scheduler and worker threads batch and compute) and awaits the futures; tokenizing for /tokenize and the
index search run on a thread. Around every call (`_run`): the request's deadline (--request-timeout-ms, also
handed to the scheduler, which never computes a request past it) and the client's connection: a client that
goes away cancels its own requests, so it costs no more than what was already computing. `_Front` (plain
ASGI, before any routing) answers at once 429 past --max-concurrent-requests (nothing queues without bound)
and 401 without the API key, counts every request, and calls the POST routes; the routes read and check
the request (`http_request.py`: 413 past --payload-limit or --max-client-batch-size, 422 a bad input).
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import time
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hlm_engine.serving.http_errors import RETRY_AFTER_S, ApiError, as_response, error_body, from_engine
from hlm_engine.serving.http_metrics import HttpMetrics
from hlm_engine.serving.http_request import ClientGone, disconnected, flag, input_texts, read_json

ROLES = ("query", "document")
GATED = frozenset({"/v1/embeddings", "/v1/search", "/tokenize"})       # count against the concurrency limit
OPEN = frozenset({"/health", "/ready", "/metrics"})                      # no API key asked (probes, scrapers)
ROUTES = GATED | OPEN | {"/v1/models"}
JSON = "application/json"


@dataclass
class Limits:
    max_concurrent_requests: int = 512
    max_client_batch_size: int = 256
    payload_limit: int = 2_000_000          # bytes of request body
    request_timeout_ms: float | None = 30_000.0
    api_key: str | None = None
    max_k: int = 1000


class Service:
    """What the routes serve: one `Engine` per role (query required), their model names, an optional
    `Retriever` paired with the query engine, and the limits. `ready` is set once warmed up (`warmup`)
    and cleared when shutting down (`draining`)."""

    def __init__(self, engines: dict, names: dict[str, list[str]] | None = None, retriever=None,
                 limits: Limits | None = None):
        if "query" not in engines:
            raise ValueError("a query engine is required")
        for role, eng in engines.items():
            if role not in ROLES or eng.role != role:
                raise ValueError(f"engine for role {role!r} serves role {eng.role!r}")
        self.engines, self.retriever, self.limits = dict(engines), retriever, limits or Limits()
        self.names = {r: list((names or {}).get(r) or [_default_name(e)]) for r, e in self.engines.items()}
        self.roles_of: dict[str, list[str]] = {}
        for role, ids in self.names.items():
            for n in ids:
                self.roles_of.setdefault(n, []).append(role)
        self.models = [self._model_card(r) for r in self.engines]
        self.metrics = HttpMetrics(self.engines, lambda: self.in_flight)
        self.in_flight, self.ready, self.draining = 0, False, False

    def _model_card(self, role: str) -> dict:
        eng = self.engines[role]
        return {"id": self.names[role][0], "object": "model", "created": 0, "owned_by": "hlm-engine", "role": role,
                "dim": int(eng.dim or eng.encoder.dim), "max_length": int(eng.encoder.max_length),
                "aliases": self.names[role][1:], "space": eng.space,
                **({"index": _index_card(self.retriever)} if role == "query" and self.retriever else {})}

    def warmup(self) -> None:
        """A few requests through every engine (and the index), then ready."""
        texts = ["cordless drill", "outdoor patio furniture set with cushions", "led light bulbs"] * 4
        for eng in self.engines.values():
            eng.encode(texts)
        if self.retriever is not None:
            self.retriever.search_vectors(self.engines["query"].encode(texts[:2]), 10)
        self.ready = True

    def resolve(self, model, input_type) -> tuple[str, str]:
        """(role, model id) of a request's `model` and `input_type` (either may be omitted)."""
        if input_type is not None and input_type not in ROLES:
            raise ApiError(400, f"unknown input_type {input_type!r}: choose 'query' or 'document'",
                           "unknown_input_type")
        if model is None:
            role = input_type or "query"
        else:
            if not isinstance(model, str) or model not in self.roles_of:
                served = ", ".join(sorted(self.roles_of))
                raise ApiError(400, f"unknown model {model!r}; this server serves {served}", "model_not_found")
            roles = self.roles_of[model]
            role = input_type or roles[0]
            if role not in roles:
                other = f"; {self.names[role][0]} serves it" if role in self.engines else ""
                raise ApiError(400, f"model {model!r} serves input_type {roles[0]!r}, not {role!r}{other}",
                               "wrong_input_type")
        if role not in self.engines:
            raise ApiError(400, f"input_type {role!r}: no {role} model loaded (start with --{role}-model)",
                           "unknown_input_type")
        return role, self.names[role][0]

    def close(self, drain: bool = True) -> None:
        self.ready = False
        for eng in self.engines.values():
            eng.close(drain=drain)


def _default_name(engine) -> str:
    folder = getattr(engine.encoder, "folder", None)
    return folder.rstrip("/").rsplit("/", 1)[-1] if folder else (engine.encoder.config.name or "model")


def _index_card(r) -> dict:
    model = r.index.model or {}
    return {"count": len(r.index), "kind": r.index.kind, "dim": r.index.dim, "teacher": model.get("name"),
            "teacher_checksum": model.get("checksum")}


# ---------------------------------------------------------------------------------------------- helpers
def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, JSON)


# ---------------------------------------------------------------------------------------------- routes
class Routes:
    def __init__(self, svc: Service):
        self.svc = svc

    @property
    def limits(self) -> Limits:
        return self.svc.limits

    def _deadline(self, t0: float) -> float | None:
        """Milliseconds left of the request's time budget (None: no timeout)."""
        t = self.limits.request_timeout_ms
        return None if t is None else max(t - (time.perf_counter() - t0) * 1e3, 0.0)

    async def _run(self, request, aw, t0: float):
        """Await `aw` in this task against the request's deadline and its client's connection: past the
        deadline -> 504, the client gone -> ClientGone; either way the task is cancelled inside `aw`, which
        cancels its engine requests (queued ones leave the scheduler, never computed). One watcher task per
        request reads the connection (the body is already read: its only message left is the disconnect)."""
        task, state = asyncio.current_task(), {"gone": False, "done": False}

        def on_gone(w):
            if not w.cancelled() and not state["done"]:
                state["gone"] = True
                task.cancel()

        watch = asyncio.ensure_future(disconnected(request.receive))
        watch.add_done_callback(on_gone)
        left = self._deadline(t0)
        try:
            async with asyncio.timeout(None if left is None else left / 1e3) as cm:
                return await aw
        except asyncio.CancelledError:
            if not state["gone"]:
                raise
            task.uncancel()
            raise ClientGone() from None
        except TimeoutError:
            if not cm.expired():
                raise  # the engine's own DeadlineExceeded: mapped by the caller
            raise ApiError(504, f"request timed out after {self.limits.request_timeout_ms:g} ms "
                           "(--request-timeout-ms); its queued work was dropped", "timeout") from None
        finally:
            state["done"] = True
            watch.cancel()

    async def embeddings(self, request) -> Response:
        t0 = time.perf_counter()
        body = await read_json(request, self.limits.payload_limit)
        role, model = self.svc.resolve(body.get("model"), body.get("input_type"))
        texts = input_texts(body.get("input"), "input", self.limits.max_client_batch_size)
        eng = self.svc.engines[role]
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise ApiError(400, f"encoding_format must be 'float' or 'base64', got {fmt!r}", "invalid_parameter")
        dim, full = body.get("dimensions"), eng.dim or eng.encoder.dim
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= full):
            raise ApiError(400, f"dimensions must be an int in [1, {full}] for model {model}, got {dim!r}",
                           "invalid_parameter")
        truncate = flag(body, "truncate", True)
        try:
            vecs, n_tok = await self._run(request, eng.aembed(
                texts, dim=dim, deadline_ms=self._deadline(t0), truncate=truncate, return_tokens=True), t0)
        except (ApiError, ClientGone):
            raise
        except Exception as e:
            raise from_engine(e, "input") from None
        if fmt == "base64":
            rows = [base64.b64encode(v.astype("<f4", copy=False).tobytes()).decode() for v in vecs]
        else:
            rows = list(vecs)
        n = int(sum(n_tok))
        return _json({"object": "list", "model": model, "usage": {"prompt_tokens": n, "total_tokens": n},
                      "data": [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(rows)]})

    async def search(self, request) -> Response:
        t0 = time.perf_counter()
        r = self.svc.retriever
        if r is None:
            raise ApiError(400, "no index loaded: start the server with --index DIR", "no_index")
        body = await read_json(request, self.limits.payload_limit)
        _, model = self.svc.resolve(body.get("model"), "query")
        queries = input_texts(body.get("query"), "query", self.limits.max_client_batch_size)
        k = body.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.limits.max_k:
            raise ApiError(400, f"k must be an int in [1, {self.limits.max_k}], got {k!r}", "invalid_parameter")
        eng = self.svc.engines["query"]

        async def go():
            vecs, n_tok = await eng.aembed(queries, deadline_ms=self._deadline(t0), return_tokens=True)
            return await asyncio.to_thread(r.search_vectors, vecs, k), n_tok

        try:
            hits, n_tok = await self._run(request, go(), t0)
        except (ApiError, ClientGone):
            raise
        except Exception as e:
            raise from_engine(e, "query") from None
        n = int(sum(n_tok))
        results = [[{"id": d, "score": s, "title": r.title(d)} for d, s in row] for row in hits]
        return _json({"object": "search.result", "model": model, "k": k, "results": results,
                      "usage": {"prompt_tokens": n, "total_tokens": n}})

    async def tokenize(self, request) -> Response:
        t0 = time.perf_counter()
        body = await read_json(request, self.limits.payload_limit)
        role, model = self.svc.resolve(body.get("model"), body.get("input_type"))
        texts = input_texts(body.get("input"), "input", self.limits.max_client_batch_size)
        truncate = flag(body, "truncate", True)
        eng = self.svc.engines[role]
        try:
            ids = await self._run(request, asyncio.to_thread(eng.tokenize, texts, truncate), t0)
        except (ApiError, ClientGone):
            raise
        except Exception as e:
            raise from_engine(e, "input") from None
        vocab = eng.encoder.tokenizer.tok
        data = [{"index": i, "ids": x, "tokens": [vocab.id_to_token(t) for t in x]} for i, x in enumerate(ids)]
        n = sum(len(x) for x in ids)
        return _json({"object": "list", "model": model, "data": data,
                      "usage": {"prompt_tokens": n, "total_tokens": n}})

    async def models(self, request) -> Response:
        return _json({"object": "list", "data": self.svc.models})

    async def health(self, request) -> Response:
        return _json({"status": "ok"})

    async def ready(self, request) -> Response:
        s = self.svc
        if s.ready and not s.draining:
            return _json({"status": "ready", "models": [m["id"] for m in s.models]})
        return _json({"status": "draining" if s.draining else "loading"}, 503)

    async def metrics(self, request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST
        return Response(self.svc.metrics.text(), 200, media_type=CONTENT_TYPE_LATEST)


def _handled(fn):
    """Route wrapper: ApiError / engine errors -> OpenAI-style error responses; a gone client -> 499."""
    async def route(request):
        try:
            return await fn(request)
        except ClientGone:
            return Response(b"", 499)  # nginx's "client closed request": nobody reads it, the metrics do
        except Exception as e:
            status, body, headers = as_response(e)
            return Response(body, status, headers, JSON)
    route.__name__ = fn.__name__
    return route


async def _http_error(request, exc: HTTPException) -> Response:
    msg = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else exc.detail
    return Response(error_body(exc.status_code, msg), exc.status_code, media_type=JSON)


class _Front:
    """Plain-ASGI admission in front of the routes: API key, concurrency limit (429 at once), metrics. The
    POST routes (`posts`: path -> handler) are called from here directly; Starlette's app-level middleware
    and router cost ~50 us per request (measured), a tenth of a served query's CPU on this box."""

    def __init__(self, app, svc: Service, posts: dict):
        self.app, self.svc, self.posts = app, svc, posts
        self._key, self._auth = None, None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        status = 500

        async def send_status(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        svc, admitted = self.svc, False
        try:
            if svc.limits.api_key and path not in OPEN and not self._authorized(scope, svc.limits.api_key):
                await _reply(send_status, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                             "invalid_api_key")
            elif path in GATED and svc.in_flight >= svc.limits.max_concurrent_requests:
                await _reply(send_status, 429, f"too many requests in flight ({svc.in_flight}, "
                             f"--max-concurrent-requests {svc.limits.max_concurrent_requests}); retry later",
                             "too_many_requests", [(b"retry-after", RETRY_AFTER_S.encode())])
            elif path in GATED and scope["method"] == "POST":
                svc.in_flight += 1
                admitted = True
                response = await self.posts[path](Request(scope, receive))
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            if admitted:
                svc.in_flight -= 1
            svc.metrics.observe(path if path in ROUTES else "other", status, time.perf_counter() - t0)

    def _authorized(self, scope, key: str) -> bool:
        if key != self._key:  # the limits are live (tests change them): re-derive the header on a change
            self._key, self._auth = key, ("Bearer " + key).encode()
        for k, v in scope["headers"]:
            if k == b"authorization":
                return hmac.compare_digest(v, self._auth)
        return False


async def _reply(send, status: int, message: str, code: str, headers: list | None = None) -> None:
    body = error_body(status, message, code)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def create_app(svc: Service):
    """The ASGI app: `_Front` admission, then Starlette's routing."""
    r = Routes(svc)
    posts = {"/v1/embeddings": _handled(r.embeddings), "/v1/search": _handled(r.search),
             "/tokenize": _handled(r.tokenize)}
    routes = [Route(path, fn, methods=["POST"]) for path, fn in posts.items()]  # (reached from _Front directly)
    routes += [Route("/v1/models", _handled(r.models), methods=["GET"]),
              Route("/health", r.health, methods=["GET"]),
              Route("/ready", r.ready, methods=["GET"]),
              Route("/metrics", r.metrics, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return _Front(app, svc, posts)
