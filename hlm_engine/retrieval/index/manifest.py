"""The index manifest: what an index folder holds, and the check that a query encoder fits it.

An index answers inner-product queries in one embedding space: that of the teacher which encoded the ads.
A query vector from any other space (another model, an unaligned student, another dim) returns
confident-looking garbage, so loading refuses such a pairing instead.
"""
from __future__ import annotations

import os

from hlm_engine.io import read_json

FORMAT = "hlm-index/1"
METRIC = "ip"  # inner product on L2-normalised vectors = cosine similarity


def read_index_manifest(index_dir: str) -> dict:
    path = os.path.join(index_dir, "manifest.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{index_dir}: no manifest.json (not an index folder written by hlm index build)")
    m = read_json(path)
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
    return m


def check_compatible(manifest: dict, *, dim: int | None = None, metric: str | None = METRIC,
                     teacher_checksum: str | None = None, what: str = "query encoder") -> None:
    """Raise ValueError naming the first mismatch between an index and what is paired with it.

    teacher_checksum: the weights checksum of the teacher whose space the queries are in (the encoder's
    own checksum if it is the teacher, else the `teacher_checksum` its alignment file declares)."""
    where = manifest.get("_dir", "index")
    if dim is not None and int(dim) != int(manifest["dim"]):
        raise ValueError(f"{where}: index vectors are {manifest['dim']}-d but the {what} emits {dim}-d vectors")
    if metric is not None and metric != manifest.get("metric"):
        raise ValueError(f"{where}: index metric is {manifest.get('metric')!r}, the {what} needs {metric!r}")
    if teacher_checksum is not None:
        model = manifest.get("model") or {}
        if model.get("checksum") and model["checksum"] != teacher_checksum:
            raise ValueError(
                f"{where}: index was built from teacher {model.get('name')!r} (weights {model['checksum'][:12]}) "
                f"but the {what} produces vectors in the space of weights {teacher_checksum[:12]}: "
                "different embedding spaces, results would be meaningless")
