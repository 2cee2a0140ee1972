"""What a reader needs to compare figures across runs: the machine, thread count, library versions, commit."""
from __future__ import annotations

import os
import platform
import subprocess
import time


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: str | None = None) -> str | None:
    """Short commit hash of the checkout holding `path` (default: this package); None outside a git checkout
    or without git."""
    where = path or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    return r.stdout.strip() or None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_stamp(threads: int | None = None) -> dict:
    """{cpu, cores, threads, torch, triton, python, commit, loadavg_1_5_15, time} — read now."""
    import torch
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": threads if threads is not None else torch.get_num_threads(),
            "torch": torch.__version__, "triton": _version("triton"), "python": platform.python_version(),
            "commit": git_commit(), "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
