"""The house's import direction: kernels, csrc <- ops <- models <- serving <- retrieval <- train <- bench.

The runtime (`hlm_engine` minus its `train` and `report` packages) never imports training, reporting, bench
or matplotlib, not even lazily inside a function; models reach kernels and the C++ extension only through
`hlm_engine.ops`. Checked two ways: statically over every import statement of every runtime file, and by
running `import hlm_engine` and `hlm encode --help` in fresh interpreters. Package files stay short."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "hlm_engine")
# Symlinked layers installed inside the package namespace (setup.py): kernels/, train/, report/.
LAYERS = {"kernels", "train", "report"}
MAX_LINES = 420


def _runtime_files():
    for dirpath, dirnames, filenames in os.walk(PKG):
        rel = os.path.relpath(dirpath, PKG)
        if rel.split(os.sep)[0] in LAYERS:
            dirnames[:] = []
            continue
        for f in filenames:
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def _module_of(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str):
    """Every module an import statement in the file names (top level and inside functions)."""
    mod = _module_of(path)
    pkg = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield node.lineno, base
            for a in node.names:  # `from hlm_engine import train` names a module too
                yield node.lineno, f"{base}.{a.name}"


FORBIDDEN_RUNTIME = ("hlm_engine.train", "hlm_engine.report", "matplotlib", "bench", "sentence_transformers")


def _hits(prefixes, files):
    bad = []
    for path in files:
        for line, name in _imports(path):
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {name}")
    return sorted(set(bad))


def test_the_walk_sees_the_runtime():
    files = [_module_of(p) for p in _runtime_files()]
    assert "hlm_engine.encoder" in files and "hlm_engine.serving.engine" in files
    assert not any(m.startswith(("hlm_engine.train", "hlm_engine.report", "hlm_engine.kernels")) for m in files)


def test_runtime_never_imports_training_reporting_or_bench():
    assert _hits(FORBIDDEN_RUNTIME, _runtime_files()) == []


def test_models_reach_kernels_only_through_ops():
    models = [p for p in _runtime_files() if os.sep + "models" + os.sep in p]
    assert models
    assert _hits(("hlm_engine.kernels", "hlm_engine._cpu_kernels", "hlm_engine.ops.cpu", "hlm_engine.ops.triton",
                  "triton"), models) == []


def test_serving_never_imports_retrieval():
    """serving <- retrieval: the HTTP service gets its Retriever from the entry point that composes both."""
    serving = [p for p in _runtime_files() if os.sep + "serving" + os.sep in p]
    assert serving
    assert _hits(("hlm_engine.retrieval", "hlm_engine.cli"), serving) == []


def test_kernels_are_a_leaf():
    files = [os.path.join(ROOT, "kernels", f) for f in os.listdir(os.path.join(ROOT, "kernels")) if f.endswith(".py")]
    bad = [h for h in _hits(("hlm_engine",), files) if "hlm_engine.kernels" not in h]
    assert bad == []


@pytest.mark.parametrize("argv", [["-c", "import hlm_engine, hlm_engine.serving.engine, hlm_engine.retrieval.retriever"],
                                  ["-m", "hlm_engine.cli", "encode", "--help"],
                                  ["-m", "hlm_engine.cli", "serve", "--help"]])
def test_loading_the_runtime_loads_no_training_or_matplotlib(argv):
    code = ("import runpy, sys, atexit\n"
            "def report():\n"
            "    bad = sorted(m for m in sys.modules if m.startswith(('hlm_engine.train', 'hlm_engine.report', "
            "'matplotlib')))\n"
            "    sys.__stderr__.write('LOADED:' + ','.join(bad) + '\\n')\n"
            "atexit.register(report)\n")
    if argv[0] == "-c":
        code += argv[1] + "\n"
    else:
        code += f"sys.argv = {['hlm'] + argv[2:]!r}\ntry:\n    runpy.run_module({argv[1]!r}, run_name='__main__')\n" \
                "except SystemExit:\n    pass\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded = [ln for ln in r.stderr.splitlines() if ln.startswith("LOADED:")]
    assert loaded == ["LOADED:"], r.stderr[-2000:]


def test_package_files_stay_short():
    long = []
    for top in ("hlm_engine", "kernels", "train", "report"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            if top == "hlm_engine":
                dirnames[:] = [d for d in dirnames if d not in LAYERS]
            for f in filenames:
                if f.endswith(".py"):
                    n = sum(1 for _ in open(os.path.join(dirpath, f), encoding="utf-8"))
                    if n > MAX_LINES:
                        long.append(f"{os.path.relpath(os.path.join(dirpath, f), ROOT)}: {n} lines")
    assert long == [], f"files past ~400 lines (split them, one job each): {long}"
