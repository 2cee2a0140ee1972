"""Reading a request of the HTTP service (`http_app.py`): its JSON body under the payload limit, its inputs and
flags, each failure an `ApiError` naming what was wrong (and the input's index).

    body = await read_json(request, limit)          # 413 past `limit` bytes (chunked bodies too), 400 not JSON
    texts = input_texts(body.get("input"), "input", max_batch)   # 422 empty / non-string, 413 too many
"""
from __future__ import annotations

import orjson

from hlm_engine.serving.http_errors import ApiError


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def read_json(request, limit: int) -> dict:
    """The JSON object of the body, read in chunks up to `limit` bytes (413 past it, even when chunked)."""
    cl = request.headers.get("content-length")
    if cl is not None and not cl.isdigit():
        raise ApiError(400, f"bad Content-Length {cl!r}", "invalid_request")
    if cl is not None and int(cl) > limit:
        raise ApiError(413, f"request body of {cl} bytes exceeds the payload limit ({limit} bytes)",
                       "payload_too_large")
    body, receive = b"", request.receive
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        body += msg.get("body", b"")
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds the payload limit ({limit} bytes)", "payload_too_large")
        if not msg.get("more_body"):
            break
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"body is not valid JSON: {e}", "invalid_json") from None
    if not isinstance(obj, dict):
        raise ApiError(400, f"body must be a JSON object, got {type(obj).__name__}", "invalid_json")
    return obj


def input_texts(obj, field: str, max_batch: int) -> list[str]:
    """A str or a non-empty list of non-empty strs -> list; 422 naming the bad one, 413 past the batch limit."""
    if isinstance(obj, str):
        obj = [obj]
    if not isinstance(obj, list):
        raise ApiError(422 if obj is not None else 400, f"'{field}' must be a string or a list of strings, got "
                       f"{type(obj).__name__}", "invalid_input")
    if not obj:
        raise ApiError(422, f"'{field}' is an empty list", "empty_input")
    if len(obj) > max_batch:
        raise ApiError(413, f"'{field}' holds {len(obj)} inputs > the server's max client batch size "
                       f"{max_batch}", "batch_too_large")
    for i, t in enumerate(obj):
        if not isinstance(t, str):
            raise ApiError(422, f"{field}[{i}] is {type(t).__name__}, expected a non-empty string "
                           "(token-id inputs are not supported)", "invalid_input")
        if not t.strip():
            raise ApiError(422, f"{field}[{i}] is empty (length {len(t)})", "empty_input")
    return obj


def flag(body: dict, name: str, default: bool) -> bool:
    v = body.get(name, default)
    if not isinstance(v, bool):
        raise ApiError(400, f"'{name}' must be true or false, got {v!r}", "invalid_parameter")
    return v


async def disconnected(receive) -> None:
    """Returns when the client has gone (the body is already read: the only message left is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
