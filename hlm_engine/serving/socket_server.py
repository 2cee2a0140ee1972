"""A Unix-socket front-end for `Engine` (or any `submit(text) -> Future of np.float32 [d]`).

    with SocketServer(engine.submit, "/tmp/hlm.sock") as srv:     # listening once constructed
        ...
    with SocketClient("/tmp/hlm.sock") as c:                       # blocking client (tests, tools)
        c.send(7, "cordless drill")
        rid, vec_or_error = c.recv()                               # np.float32 [d], or an error str

Wire format (big-endian integers), many requests in flight per connection, replies in completion order:
    request = u32 n | u64 id | n bytes of UTF-8 text
    reply   = u32 n | u64 id | u8 status | n bytes: status 0 -> float32 little-endian [d], 1 -> UTF-8 error

One selector thread accepts, reads and parses frames and calls `submit`; the future's done-callback (the
engine's model thread) only appends the future to its connection's outbox and wakes the selector, which
serialises and sends. A slow or dead client therefore never blocks the model thread, and replies that
finish together leave in one send per connection. `Engine(..., tokenize_in_caller=True)` suits this
front-end: submit() then tokenizes on the selector thread, one thread hand-off less per request.
"""
from __future__ import annotations

import logging
import os
import selectors
import socket
import struct
import threading
from collections import deque

import numpy as np

log = logging.getLogger("hlm_engine.serving.socket_server")

REQ = struct.Struct("!IQ")     # payload length, request id
REP = struct.Struct("!IQB")    # payload length, request id, status
OK, ERROR = 0, 1
MAX_TEXT_BYTES = 1 << 20       # a longer frame is a protocol error: the connection is closed
_RECV = 1 << 16


def encode_request(rid: int, text: str) -> bytes:
    b = text.encode("utf-8")
    return REQ.pack(len(b), rid) + b


def encode_reply(rid: int, vec=None, error: str | None = None) -> bytes:
    if error is not None:
        b = error.encode("utf-8", "replace")
        return REP.pack(len(b), rid, ERROR) + b
    b = np.ascontiguousarray(vec, dtype="<f4").tobytes()
    return REP.pack(len(b), rid, OK) + b


def parse_replies(buf: bytearray) -> list[tuple[int, int, bytes]]:
    """Consume every complete reply frame at the front of `buf` -> [(id, status, payload)]."""
    out, pos, n_buf = [], 0, len(buf)
    while n_buf - pos >= REP.size:
        n, rid, status = REP.unpack_from(buf, pos)
        end = pos + REP.size + n
        if end > n_buf:
            break
        out.append((rid, status, bytes(buf[pos + REP.size: end])))
        pos = end
    del buf[:pos]
    return out


def _future_reply(rid: int, fut) -> bytes:
    try:
        return encode_reply(rid, fut.result())
    except BaseException as e:  # CancelledError included: the client gets a reason, never silence
        return encode_reply(rid, error=f"{type(e).__name__}: {e}")


class _Conn:
    __slots__ = ("sock", "inbuf", "outbox", "wbuf", "writing", "want_write", "open")

    def __init__(self, sock):
        self.sock, self.inbuf, self.outbox, self.wbuf = sock, bytearray(), deque(), bytearray()
        self.writing, self.want_write, self.open = False, False, True


class SocketServer:
    """Serve `submit(text) -> Future` on a Unix socket at `path` (replaced if it exists)."""

    def __init__(self, submit, path: str, backlog: int = 128):
        self.submit, self.path = submit, path
        if os.path.exists(path):
            os.unlink(path)
        self._listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listen.bind(path)
        self._listen.listen(backlog)
        self._listen.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listen, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._lock = threading.Lock()
        self._ready: list[_Conn] = []   # connections with replies waiting in their outbox
        self._woken = False
        self._closed = False
        self._conns: set[_Conn] = set()
        self._thread = threading.Thread(target=self._loop, name="hlm-socket-server", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ any thread
    def _reply(self, conn: _Conn, item) -> None:
        """Queue a reply (a frame, or (id, resolved future)) for `conn` and wake the selector thread."""
        conn.outbox.append(item)   # deque.append is atomic; the selector thread pops
        with self._lock:
            if not conn.writing:
                conn.writing = True
                self._ready.append(conn)
            if self._woken or self._closed:
                return
            self._woken = True
        self._wake_w.send(b"\0")

    def _on_done(self, conn: _Conn, rid: int):
        # Runs on the thread that resolves the future (the engine's model thread): queue it, nothing more;
        # the selector thread serialises the reply.
        return lambda fut: self._reply(conn, (rid, fut))

    # ------------------------------------------------------------------ selector thread
    def _loop(self) -> None:
        while not self._closed:
            for key, ev in self._sel.select():
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._flush_ready()
                else:
                    conn = key.data
                    if ev & selectors.EVENT_READ and conn.open:
                        self._read(conn)
                    if ev & selectors.EVENT_WRITE and conn.open:
                        self._send(conn)
        for conn in list(self._conns):
            self._drop(conn)

    def _accept(self) -> None:
        try:
            sock, _ = self._listen.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = _Conn(sock)
        self._conns.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        buf = conn.inbuf
        buf += data
        pos, n_buf = 0, len(buf)
        while n_buf - pos >= REQ.size:
            n, rid = REQ.unpack_from(buf, pos)
            if n > MAX_TEXT_BYTES:
                log.warning("closing a connection: frame of %d bytes > %d", n, MAX_TEXT_BYTES)
                self._drop(conn)
                return
            end = pos + REQ.size + n
            if end > n_buf:
                break
            raw = bytes(buf[pos + REQ.size: end])
            pos = end
            try:
                fut = self.submit(raw.decode("utf-8"))
            except Exception as e:  # QueueFull / EngineClosed / bad UTF-8: answered at once
                self._reply(conn, encode_reply(rid, error=f"{type(e).__name__}: {e}"))
                continue
            fut.add_done_callback(self._on_done(conn, rid))
        del buf[:pos]

    def _flush_ready(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            ready, self._ready = self._ready, []
            self._woken = False
            for conn in ready:
                conn.writing = False
        for conn in ready:
            if conn.open:
                self._send(conn)

    def _send(self, conn: _Conn) -> None:
        box, wbuf = conn.outbox, conn.wbuf
        while box:
            item = box.popleft()
            wbuf += item if isinstance(item, bytes) else _future_reply(*item)
        try:
            sent = conn.sock.send(wbuf) if wbuf else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn)
            return
        del wbuf[:sent]
        # Wait for the socket to drain only while something is left (a slow reader).
        if bool(wbuf) != conn.want_write:
            conn.want_write = bool(wbuf)
            self._sel.modify(conn.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if wbuf else 0), conn)

    def _drop(self, conn: _Conn) -> None:
        # Requests still running for a dropped connection complete and their replies are discarded.
        if not conn.open:
            return
        conn.open = False
        self._conns.discard(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop serving: close the listener and every connection (in-flight replies are dropped)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake_w.send(b"\0")
        self._thread.join()
        self._sel.close()
        for s in (self._listen, self._wake_r, self._wake_w):
            s.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self) -> "SocketServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SocketClient:
    """A blocking client for one connection: send() any number of requests, recv() replies as they come."""

    def __init__(self, path: str, timeout: float | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = bytearray()
        self._replies: deque = deque()

    def send(self, rid: int, text: str) -> None:
        self.sock.sendall(encode_request(rid, text))

    def recv(self) -> tuple[int, np.ndarray | str]:
        """The next reply: (id, np.float32 [d]) or (id, "ErrorType: message")."""
        while not self._replies:
            data = self.sock.recv(_RECV)
            if not data:
                raise ConnectionError("server closed the connection")
            self._buf += data
            self._replies.extend(parse_replies(self._buf))
        rid, status, payload = self._replies.popleft()
        if status == OK:
            return rid, np.frombuffer(payload, dtype="<f4").astype(np.float32)
        return rid, payload.decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SocketClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
