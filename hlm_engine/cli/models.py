"""`hlm models install|path`: the default model folders (see hlm_engine.hub)."""
from __future__ import annotations

import sys

from hlm_engine.hub import DEFAULT_MODELS, _canonical, install_model, models_dir


def register(sub):
    p = sub.add_parser("models", help="install the default models into the cache / print its path")
    p.add_argument("action", choices=["install", "path"])
    p.add_argument("names", nargs="*", default=None, help=f"default: all of {', '.join(DEFAULT_MODELS)}")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=run)


def run(a) -> int:
    if a.action == "path":
        print(models_dir())
        return 0
    for n in a.names or list(DEFAULT_MODELS):
        key = _canonical(n)
        if key is None:
            raise ValueError(f"unknown model {n!r}; choose from {', '.join(DEFAULT_MODELS)}")
        try:
            print(install_model(key, force=a.force))
        except RuntimeError as e:
            if DEFAULT_MODELS[key].kind != "npm":
                raise
            # The Qwen3 tokenizer only serves the Qwen3-architecture tests/study; those skip without it.
            print(f"[hlm] warning: {e}", file=sys.stderr)
    return 0
