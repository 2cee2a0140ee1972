"""`hlm serve`: stdin lines -> JSON lines in input order; a bad line fails only its own output line."""
import io
import json

import numpy as np

from hlm_engine.cli import main


def test_serve_stdin_loop(monkeypatch, capsys, minilm):
    lines = ["cordless drill", "", "patio set"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["serve", "--model", "minilm", "--backend", "torch", "--max-delay-us", "500"]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in out] == [0, 1, 2]
    assert "empty" in out[1]["error"]
    got = np.array([out[0]["embedding"], out[2]["embedding"]], dtype=np.float32)
    np.testing.assert_allclose(got, minilm.encode(["cordless drill", "patio set"]), atol=1e-5)
