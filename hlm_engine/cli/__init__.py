"""`hlm` command line. Each subcommand lives in its own module with `register(subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subcommand modules, in help order. A module registers one or more subcommands.
COMMANDS = ["models", "encode", "encode_corpus", "index", "search", "eval", "train", "prune", "study", "report", "serve"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hlm", description="hlm-engine: asymmetric embedding retrieval")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        modname = "hlm_engine.models" if name == "models" else f"hlm_engine.cli.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # subcommand not part of this build
            raise
        mod.register(sub)
    return ap


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[hlm] %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"hlm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
