"""The embedding space's identity: which model's vectors these are, so that an index and a query encoder
are paired only when they live in the same space.

A model is identified by the sha256 of its weight files. A student aligned to a teacher declares that
teacher in `hlm_alignment.json` in its folder (`{"teacher": name, "teacher_checksum": sha256}`, written by
the alignment phase), so its queries search the teacher's index.
"""
from __future__ import annotations

import glob
import os

from hlm_engine.io import read_json

ALIGNMENT_FILE = "hlm_alignment.json"
_CHECKSUMS: dict[tuple, str] = {}


def _weights_checksum_cached(folder: str) -> str:
    from hlm_engine.weights import weights_checksum
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")) + glob.glob(os.path.join(folder, "*.bin")))
    key = (os.path.abspath(folder),) + tuple((f, os.path.getsize(f), os.path.getmtime(f)) for f in files)
    if key not in _CHECKSUMS:  # hashing a 440 MB teacher takes ~1 s; do it once per process
        _CHECKSUMS[key] = weights_checksum(folder)
    return _CHECKSUMS[key]


def encoder_of(obj):
    """The Encoder behind an Encoder, an Engine (`.encoder`) or anything exposing one; else None."""
    if hasattr(obj, "config") and hasattr(obj, "folder"):
        return obj
    inner = getattr(obj, "encoder", None)
    return inner if inner is not None and hasattr(inner, "config") else None


def model_identity(encoder_or_name) -> dict:
    """{name, checksum, dim, normalize, folder} of a model name/folder, an Encoder or an Engine.

    Computed without loading weights when given a name (so a finished run returns at once). `checksum` is
    None for a model that was never saved (no folder): such a model cannot be pinned in a manifest."""
    if isinstance(encoder_or_name, (str, os.PathLike)):
        from hlm_engine.config import load_folder_config
        from hlm_engine.hub import resolve
        folder = resolve(os.fspath(encoder_or_name))
        cfg = load_folder_config(folder)
        return {"name": os.path.basename(folder.rstrip("/")), "checksum": _weights_checksum_cached(folder),
                "dim": cfg.embed_dim, "normalize": bool(cfg.normalize), "folder": folder}
    enc = encoder_of(encoder_or_name)
    if enc is not None:
        folder = enc.folder
        return {"name": os.path.basename(folder.rstrip("/")) if folder else (enc.config.name or "unsaved"),
                "checksum": _weights_checksum_cached(folder) if folder else None,
                "dim": int(enc.dim), "normalize": bool(enc.config.normalize), "folder": folder}
    dim = getattr(encoder_or_name, "dim", None)
    if dim is None or not hasattr(encoder_or_name, "encode"):
        raise ValueError(f"{type(encoder_or_name).__name__} is not a model: need a name/folder, an Encoder, "
                         "or an object with .encode(list) -> np.ndarray and .dim")
    return {"name": type(encoder_or_name).__name__, "checksum": None, "dim": int(dim), "normalize": True,
            "folder": None}


def query_space(query_encoder) -> tuple[int, str | None, str]:
    """(dim, checksum of the teacher whose space it encodes into, description) of a query encoder."""
    ident = model_identity(query_encoder)
    folder = ident["folder"]
    if folder and os.path.exists(os.path.join(folder, ALIGNMENT_FILE)):
        al = read_json(os.path.join(folder, ALIGNMENT_FILE))
        if not al.get("teacher_checksum"):
            raise ValueError(f"{folder}/{ALIGNMENT_FILE}: no 'teacher_checksum' field")
        return ident["dim"], al["teacher_checksum"], f"{ident['name']} (aligned to {al.get('teacher', '?')})"
    return ident["dim"], ident["checksum"], ident["name"]


def space_of(encoder) -> dict:
    """{name, dim, checksum, space} of an encoder: `space` is the checksum of the model whose embedding space
    its vectors live in (its teacher's for an aligned student, its own otherwise; None when unknown)."""
    dim, space, desc = query_space(encoder)
    ident = model_identity(encoder)
    return {"name": desc, "dim": dim, "checksum": ident["checksum"], "space": space}
