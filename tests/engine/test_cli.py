"""`hlm encode`: .tsv (with --column) and .txt inputs -> an .npy of the right shape that matches the Python
API; errors exit with code 2 and name the problem. Most cases call the CLI in-process (`main(argv)`); one
runs the installed `hlm` entry point as a subprocess to check the real exit code."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hlm_engine.cli import main

QUERIES = ["cordless drill", "white semi-gloss paint", "r19 insulation roll", "pull down kitchen faucet",
           "2x4x8 stud", "matte black deadbolt", "50 ft garden hose"]


@pytest.fixture
def inputs(tmp_path):
    tsv = tmp_path / "queries.tsv"
    tsv.write_text("query_id\tquery\n" + "".join(f"{i}\t{q}\n" for i, q in enumerate(QUERIES)))
    txt = tmp_path / "queries.txt"
    txt.write_text("\n".join(QUERIES) + "\n\n")  # a trailing blank line is skipped, not an empty text
    return tsv, txt


def test_encode_tsv(inputs, tmp_path, minilm, capsys):
    out = tmp_path / "q.npy"
    rc = main(["encode", "--model", "minilm", "--input", str(inputs[0]), "--column", "query",
               "--output", str(out), "--backend", "torch", "--batch-size", "3"])
    assert rc == 0
    emb = np.load(out)
    assert emb.shape == (len(QUERIES), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, minilm.encode(QUERIES), atol=1e-5)
    captured = capsys.readouterr()
    assert f"encoded {len(QUERIES)} texts" in captured.out
    assert "encode" in captured.err and "batch" in captured.err  # the tqdm progress bar


def test_encode_txt_with_dim(inputs, tmp_path):
    out = tmp_path / "sub" / "q.npy"  # the output folder is created
    rc = main(["encode", "--input", str(inputs[1]), "--output", str(out), "--dim", "128", "--backend", "torch"])
    assert rc == 0
    emb = np.load(out)
    assert emb.shape == (len(QUERIES), 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_missing_column_exits_2_and_names_it(inputs, tmp_path, capsys):
    out = tmp_path / "q.npy"
    rc = main(["encode", "--input", str(inputs[0]), "--column", "title", "--output", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "'title'" in err and "query_id" in err  # the missing column and the ones that exist


@pytest.mark.parametrize("case", ["no-column", "missing-file", "unknown-model", "empty-line-in-tsv"])
def test_other_errors_exit_2(inputs, tmp_path, capsys, case):
    args = ["encode", "--input", str(inputs[0]), "--column", "query", "--output", str(tmp_path / "o.npy")]
    if case == "no-column":
        args = [a for a in args if a not in ("--column", "query")]
    elif case == "missing-file":
        args[2] = str(tmp_path / "nope.tsv")
    elif case == "unknown-model":
        args += ["--model", "no-such-model"]
    else:
        inputs[0].write_text("query_id\tquery\n0\tdrill\n1\t \n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hlm encode: error:")
    assert {"no-column": "--column", "missing-file": "nope.tsv", "unknown-model": "no-such-model",
            "empty-line-in-tsv": "input 1"}[case] in err
    assert not (tmp_path / "o.npy").exists()


def test_entry_point_exit_code(inputs, tmp_path):
    hlm = os.path.join(os.path.dirname(sys.executable), "hlm")
    cmd = [hlm] if os.path.exists(hlm) else [sys.executable, "-m", "hlm_engine.cli"]
    r = subprocess.run(cmd + ["encode", "--input", str(inputs[0]), "--column", "missing",
                              "--output", str(tmp_path / "o.npy")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "missing column" in r.stderr
