"""Errors of the HTTP service, in OpenAI's shape: `{"error": {"message", "type", "code"}}` with a status.

    raise ApiError(422, "input[3] is empty", code="empty_input")
    status, body, headers = as_response(exc)     # any exception -> what the client gets

Status by cause (the service's contract, tests/serving/test_errors.py checks each):
    400 invalid_request_error  malformed JSON, a bad field, unknown `model` or `input_type`
    401 authentication_error   missing or wrong API key
    413 request_too_large      more inputs than --max-client-batch-size, a body over --payload-limit
    422 invalid_input          an empty or non-string input, an over-long one with truncate=false (its index, length)
    429 rate_limit_error       over --max-concurrent-requests, or the engine's queue full (with Retry-After)
    503 unavailable            not ready yet, or shutting down
    504 timeout                past --request-timeout-ms (queued work past its deadline is never computed)
"""
from __future__ import annotations

import logging

import orjson

from hlm_engine.serving.engine import EngineClosed, InputTooLong
from hlm_engine.serving.scheduler import DeadlineExceeded, QueueFull

log = logging.getLogger("hlm_engine.serving.http")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "request_too_large", 422: "invalid_input", 429: "rate_limit_error",
          500: "server_error", 503: "unavailable", 504: "timeout"}
RETRY_AFTER_S = "1"


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": _TYPES.get(status, "error"), "code": code}})


def from_engine(e: BaseException, what: str = "input") -> ApiError:
    """An engine failure -> the ApiError the client gets (the engine's own message kept)."""
    idx = getattr(e, "index", None)
    where = f"{what}[{idx}]" if idx is not None else what
    if isinstance(e, InputTooLong):
        if e.what == "max_length":
            msg = f"{where} is too long: {e.n_tokens} tokens > the model's max_length {e.limit} (truncate=false)"
        else:
            msg = f"{where} is too long: {e.n_tokens} tokens > {e.what} {e.limit} (the server's batch limit)"
        return ApiError(422, msg, "input_too_long")
    if isinstance(e, DeadlineExceeded):
        return ApiError(504, f"request timed out in the queue ({e}); the expired work was not computed", "timeout")
    if isinstance(e, QueueFull):
        return ApiError(429, f"the engine's queue is full ({e}); retry later", "queue_full",
                        {"retry-after": RETRY_AFTER_S})
    if isinstance(e, EngineClosed):
        return ApiError(503, "the server is shutting down", "shutting_down")
    if isinstance(e, ValueError):
        return ApiError(422, f"{where}: {e}", "invalid_input")
    log.exception("request failed", exc_info=e)
    return ApiError(500, f"internal error: {type(e).__name__}: {e}", "internal_error")


def as_response(e: BaseException) -> tuple[int, bytes, dict]:
    err = e if isinstance(e, ApiError) else from_engine(e)
    return err.status, error_body(err.status, err.message, err.code), err.headers
