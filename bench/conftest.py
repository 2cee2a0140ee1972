"""Shared benchmark fixtures: the real data folder, the 2,000 benchmark queries, and the results writer.

Benchmarks run with `pytest bench/ --benchmark-only` (`make bench`); they are never part of `make test`.
Without $HLM_DATA_DIR the data-dependent benchmarks skip with a reason: speed figures on the tiny
sample set would not be comparable.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One process, explicit torch thread counts: keep the Rust tokenizer from adding its own thread pool.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import platform  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NUM_BENCH_QUERIES = 2000


def bench_data_dir():
    d = os.environ.get("HLM_DATA_DIR")
    return d if d and os.path.isdir(os.path.join(d, "homedepot")) else None


@pytest.fixture(scope="session")
def data_dir():
    d = bench_data_dir()
    if d is None:
        pytest.skip("benchmarks need the real data: set HLM_DATA_DIR to the folder holding homedepot/")
    return d


@pytest.fixture(scope="session")
def bench_queries(data_dir) -> list[str]:
    """The first 2,000 real Home Depot queries, train then dev, in file order (deterministic)."""
    from hlm_engine.retrieval.data import load_homedepot
    qs = load_homedepot("train", data_dir).queries + load_homedepot("dev", data_dir).queries
    assert len(qs) >= NUM_BENCH_QUERIES, f"only {len(qs)} queries in {data_dir}"
    return qs[:NUM_BENCH_QUERIES]


def _machine_info() -> dict:
    """What a reader needs to compare figures across runs (incl. how busy the machine was)."""
    import torch
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "time": time.strftime("%Y-%m-%d %H:%M")}


def _write_result(name: str, obj: dict) -> str:
    """Atomically write bench/results/<name>.json (sorted keys, indented); returns the path."""
    from hlm_engine.io import write_json
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    write_json(path, obj)
    return path


@pytest.fixture(scope="session")
def machine_info():
    """Callable -> dict: call it when measuring (the load average is read at call time)."""
    return _machine_info


@pytest.fixture(scope="session")
def write_result():
    """Callable (name, obj) -> path of bench/results/<name>.json."""
    return _write_result
