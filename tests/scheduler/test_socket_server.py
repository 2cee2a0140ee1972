"""`hlm_engine.serving.socket_server`: the Unix-socket front-end returns the engine's embeddings over the wire, answers
every request (errors included) with its own id, survives clients that vanish, and closes cleanly."""
import os
import threading
from concurrent.futures import Future

import numpy as np
import pytest

from hlm_engine import Engine
from hlm_engine.serving.scheduler import QueueFull
from hlm_engine.serving.socket_server import REQ, SocketClient, SocketServer, encode_request, parse_replies

QUERIES = ["cordless drill", "outdoor patio furniture set with cushions", "x", "deck screws", "ceiling fan"]
WAIT = 60


@pytest.fixture
def sock_path(tmp_path):
    return os.path.join(tmp_path, "hlm.sock")


def test_embeddings_over_the_wire_match_encode(sock_path, minilm, impl):
    ref = minilm.encode(QUERIES)
    with Engine(minilm, scheduler=impl, max_delay_us=1000) as eng, SocketServer(eng.submit, sock_path):
        got = {}

        def client(k):
            with SocketClient(sock_path, timeout=WAIT) as c:
                for i in range(len(QUERIES)):  # pipelined: every request in flight before the first reply
                    c.send(100 * k + i, QUERIES[i])
                for _ in QUERIES:
                    rid, vec = c.recv()
                    got[rid] = vec

        ts = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        [t.start() for t in ts]
        [t.join(WAIT) for t in ts]
        assert sorted(got) == [100 * k + i for k in range(3) for i in range(len(QUERIES))]
        for rid, vec in got.items():
            assert vec.dtype == np.float32 and vec.shape == (minilm.dim,)
            np.testing.assert_allclose(vec, ref[rid % 100], atol=1e-5)


def test_errors_answer_their_own_request(sock_path, minilm, impl):
    with Engine(minilm, scheduler=impl) as eng, SocketServer(eng.submit, sock_path):
        with SocketClient(sock_path, timeout=WAIT) as c:
            c.send(1, "   ")
            c.send(2, "hammer")
            c.sock.sendall(REQ.pack(2, 3) + b"\xff\xfe")  # not UTF-8
            replies = dict(c.recv() for _ in range(3))
    assert "ValueError" in replies[1] and "empty" in replies[1]
    assert isinstance(replies[2], np.ndarray) and replies[2].shape == (minilm.dim,)
    assert "UnicodeDecodeError" in replies[3]


class _Stub:
    """submit() that raises QueueFull for 'full', never resolves 'hang', and resolves the rest at once."""

    def __init__(self):
        self.hung: list[Future] = []

    def submit(self, text):
        if text == "full":
            raise QueueFull("queue full")
        f = Future()
        if text == "hang":
            self.hung.append(f)
        else:
            f.set_result(np.full(4, len(text), np.float32))
        return f


def test_synchronous_rejection_and_late_replies(sock_path):
    stub = _Stub()
    with SocketServer(stub.submit, sock_path):
        with SocketClient(sock_path, timeout=WAIT) as c:
            for rid, t in enumerate(["hang", "full", "abc"]):
                c.send(rid, t)
            first = dict(c.recv() for _ in range(2))
            assert first[1].startswith("QueueFull") and first[2].tolist() == [3.0] * 4
            stub.hung[0].set_result(np.zeros(4, np.float32))  # resolved later, from another thread
            rid, vec = c.recv()
            assert rid == 0 and vec.tolist() == [0.0] * 4


def test_vanished_client_and_close(sock_path):
    stub = _Stub()
    srv = SocketServer(stub.submit, sock_path)
    c = SocketClient(sock_path, timeout=WAIT)
    c.send(0, "hang")
    with SocketClient(sock_path, timeout=WAIT) as c2:  # wait until the first request reached submit()
        c2.send(1, "ok")
        assert c2.recv()[0] == 1
    c.close()
    stub.hung[0].set_result(np.zeros(4, np.float32))  # its client is gone: the reply is dropped
    with SocketClient(sock_path, timeout=WAIT) as c3:  # the server still serves others
        c3.send(5, "abcd")
        assert c3.recv()[0] == 5
    srv.close()
    srv.close()  # idempotent
    assert not os.path.exists(sock_path)


def test_frames_split_across_reads(sock_path):
    stub = _Stub()
    with SocketServer(stub.submit, sock_path), SocketClient(sock_path, timeout=WAIT) as c:
        data = encode_request(9, "hello") + encode_request(10, "hi")
        for i in range(len(data)):  # one byte at a time
            c.sock.sendall(data[i: i + 1])
        assert dict(c.recv() for _ in range(2)).keys() == {9, 10}


def test_parse_replies_keeps_partial_frames():
    from hlm_engine.serving.socket_server import encode_reply
    buf = bytearray(encode_reply(1, np.ones(3)) + encode_reply(2, error="boom")[:-2])
    out = parse_replies(buf)
    assert [(r[0], r[1]) for r in out] == [(1, 0)] and len(buf) > 0
    buf += b"om"
    assert parse_replies(buf) == [(2, 1, b"boom")] and not buf
