"""`hlm` command line. Each subcommand lives in its own module with `register(subparsers)`.

The runtime never imports training or reporting: a command's module is imported only when that command is
run (or when the full parser is asked for, `build_parser()`), so `hlm encode --help` loads neither
`hlm_engine.train` nor matplotlib. Training and reporting register their own subcommands from their own
packages (`hlm_engine.train.cli_*`, `hlm_engine.report.cli`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module with register(sub), one-line help), in help order.
COMMANDS = {
    "models": ("hlm_engine.cli.models", "install the default models into the cache / print its path"),
    "encode": ("hlm_engine.cli.encode", "encode texts from a file into an .npy matrix"),
    "encode-corpus": ("hlm_engine.cli.encode_corpus", "encode a corpus (TSV) offline with the teacher into shards"),
    "index": ("hlm_engine.cli.index", "build / inspect / update an ANN index over corpus embeddings"),
    "search": ("hlm_engine.cli.search", "search an index with a query encoder and print the top ads"),
    "eval": ("hlm_engine.cli.eval", "P/R@10,100, nDCG@10, MRR@10 of a model over an index (+ teacher recovery)"),
    "train": ("hlm_engine.train.cli_train", "train: teacher | align | refine (HARNESS-LM phases)"),
    "prune": ("hlm_engine.train.cli_prune", "progressive structured pruning with re-alignment (and `prune scores`)"),
    "study": ("hlm_engine.train.cli_study", "the design-choice study: train/cache/tabulate a grid of cells"),
    "reproduce": ("hlm_engine.train.cli_reproduce", "the whole recipe on the whole catalogue (make reproduce)"),
    "report": ("hlm_engine.report.cli", "write bench/results/REPORT.md (+ plots) and the README results section"),
    "serve": ("hlm_engine.cli.serve", "serve the engine: stdin lines (JSON out) or HTTP (--http)"),
}


def _register(sub, name: str) -> bool:
    modname = COMMANDS[name][0]
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name is not None and modname.startswith(e.name):
            return False  # that part (training, reporting) is not installed in this build
        raise
    mod.register(sub)
    return True


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `hlm` parser. `only`: register that command in full and the others as help-only stubs."""
    ap = argparse.ArgumentParser(prog="hlm", description="hlm-engine: asymmetric embedding retrieval")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        if only is None or name == only:
            _register(sub, name)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return ap


def _command(argv: list[str]) -> str | None:
    """The subcommand named in argv (first token that is not an option), if it is one of ours."""
    for tok in argv:
        if not tok.startswith("-"):
            return tok if tok in COMMANDS else None
    return None


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[hlm] %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    cmd = _command(argv)
    args = build_parser(only=cmd or "").parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"hlm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
