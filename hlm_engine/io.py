"""Atomic writes: nothing half-written is ever visible under a final name (temp file + rename)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temp path beside `path`; on success fsync + rename it over `path`, else remove it."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path: str):
    """Parsed JSON of `path`; a corrupt file raises ValueError naming it (FileNotFoundError stays)."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt JSON ({e})") from None


def write_json(path: str, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def save_npy(path: str, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


@contextlib.contextmanager
def atomic_dir(path: str):
    """Build a directory under a temp name and swap it into place only when complete.

    An existing `path` is replaced (moved aside, then deleted), so readers see either the old or the
    new directory, never a mix."""
    path = os.path.abspath(path.rstrip("/"))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_update_file(h, path: str) -> None:
    """Feed a file's bytes to the hash `h` in 4 MiB chunks."""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    sha256_update_file(h, path)
    return h.hexdigest()


def sha256_json(obj, n: int | None = None) -> str:
    """sha256 of a JSON-serialisable object (sorted keys): a stable cache key; the first n hex digits."""
    d = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return d if n is None else d[:n]
