"""The design-choice study's configuration: a TOML file with shared settings and a list of cells.

    [study]                 shared by every cell: the data slice, the teacher, thread counts, speed settings
    [defaults]              cell settings every cell starts from
    [[cell]]                one row of the study: a name, an axis, and the settings it changes

A cell is a flat dict of settings (`Cell`). Unknown keys, wrong types and unknown objectives are errors that
name the file, the cell and the key, raised before any work. `--set KEY=VALUE` overrides apply to the
[study] table when KEY is a study setting, else to [defaults] and every cell (a smaller budget for a smoke
run: `--set align_steps=20`).

TOML has no null: sizes take an integer or "all"; optional strings are "".
"""
from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field

from hlm_engine.io import sha256_json

OBJECTIVES = ("l2", "mse", "cosine", "infonce", "none")   # "none": direct asymmetric fine-tuning, no alignment
QWEN3_RANDOM = "qwen3-random"                            # student built from our config system, random init


@dataclass
class StudySettings:
    teacher: str = "mpnet"
    data_dir: str = ""                  # "": $HLM_DATA_DIR, else the packaged sample set
    products: int | None = None         # corpus slice (every dev-judged product + train positives + distractors)
    train_queries: int | None = 1500    # Home Depot train queries for refinement
    dev_queries: int | None = None      # dev queries measured (seeded subset)
    log_queries: int | None = 8000      # unlabeled log queries for alignment (after the holdout)
    holdout: int = 512                  # log queries kept out of alignment (distance to the teacher)
    exclude_queries: str = "dev"        # Home Depot splits whose queries leave the log: the log holds every
                                        # dev query, and a cell measured on dev must never have trained on them
    threshold: float = 2.67             # relevant = grade >= threshold
    max_length: int = 64                # tokens per query/title
    seed: int = 0
    calibration_queries: int = 512      # log queries scoring layers / FFN units before each pruning step
    corpus_cache: str = ""              # an `hlm encode-corpus` folder holding (or to hold) the teacher's
                                        # product vectors; "": one under the work dir, keyed by the slice
    train_threads: int = 2              # torch threads while training and evaluating (0: torch's default)
    threads: int = 1                    # torch threads while measuring latency / throughput
    latency_queries: int = 200          # real dev queries timed one at a time (batch 1), per round
    throughput_queries: int = 256       # queries encoded at batch 64, per round
    speed_rounds: int = 2               # interleaved rounds over all models

    def result_key(self) -> dict:
        """The settings a cell's quality depends on (not thread counts or speed settings)."""
        keep = ("teacher", "data_dir", "products", "train_queries", "dev_queries", "log_queries", "holdout",
                "exclude_queries", "threshold", "max_length", "seed", "calibration_queries")
        return {k: getattr(self, k) for k in keep}


@dataclass(frozen=True)
class Cell:
    name: str
    axis: str = ""
    student: str = "minilm"             # model name or folder, or "qwen3-random" (built from the qwen3_* fields)
    objective: str = "l2"               # l2 | mse | cosine | infonce | none (direct asymmetric fine-tuning)
    align_steps: int = 400
    align_lr: float = 1e-4
    align_batch_size: int = 64
    align_on_titles: bool = False       # also align on every product title (their teacher vectors are the
    #                                     index input: no extra teacher pass), as `make reproduce` does
    refine: bool = False                # InfoNCE refinement against the frozen teacher product vectors
    refine_steps: int = 200
    refine_lr: float = 2e-5
    refine_batch_size: int = 32
    num_negatives: int = 7              # mined hard negatives per query in refinement
    refine_align_weight: float = 1.0    # ℓ2 anchor to the teacher's query vectors in refinement (0 = off;
    #                                     the direct fine-tuning baseline never has one)
    prune: str = ""                     # progressive prune -> re-align schedule after alignment, e.g. "4x1536,3x1024"
    prune_align_steps: int = 150        # ℓ2 re-alignment steps after each pruning step
    dim: int = 0                        # 0: the teacher's width; k: Matryoshka truncation of both sides to k
    qwen3_layers: int = 4
    qwen3_hidden: int = 384
    qwen3_heads: int = 6
    qwen3_kv_heads: int = 2
    qwen3_head_dim: int = 64
    qwen3_ffn: int = 1024

    def training_key(self) -> dict:
        """The settings the cell's *model* depends on (dim only changes the evaluation)."""
        d = dataclasses.asdict(self)
        for k in ("name", "axis", "dim"):
            d.pop(k)
        if self.student != QWEN3_RANDOM:
            d = {k: v for k, v in d.items() if not k.startswith("qwen3_")}
        if self.objective == "none":
            d = {k: v for k, v in d.items() if not k.startswith("align_")}
        if not self.refine and self.objective != "none":
            d = {k: v for k, v in d.items() if not k.startswith("refine_") and k != "num_negatives"}
        if not self.prune:
            d.pop("prune_align_steps")
        if not self.align_on_titles:  # cells from before the option keep their cached phases
            d.pop("align_on_titles")
        return d


@dataclass
class StudyConfig:
    path: str
    settings: StudySettings
    cells: list[Cell] = field(default_factory=list)


def stable_hash(obj, n: int = 16) -> str:
    """Short sha256 of a JSON-serialisable object (sorted keys): the cache key of a setting set."""
    return sha256_json(obj, n)


# ------------------------------------------------------------------------------------------- parsing
_OPTIONAL_INT = ("products", "train_queries", "dev_queries", "log_queries")


def _field_types(cls) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


def _coerce(where: str, key: str, value, tp: str):
    """Check a TOML value against a dataclass field type ('int', 'int | None', 'float', 'bool', 'str')."""
    if tp == "int | None":
        if value == "all":
            return None
        tp = "int"
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}[tp]
    if not ok:
        want = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[tp]
        extra = ' or "all"' if key in _OPTIONAL_INT else ""
        raise ValueError(f"{where}: {key} = {value!r} must be {want}{extra}")
    return float(value) if tp == "float" else value


def _check_keys(where: str, table: dict, cls, also: tuple = ()) -> None:
    known = set(_field_types(cls)) | set(also)
    bad = sorted(set(table) - known)
    if bad:
        raise ValueError(f"{where}: unknown key(s) {', '.join(bad)}; known keys: {', '.join(sorted(known))}")


def _cell(where: str, table: dict) -> Cell:
    types = _field_types(Cell)
    kw = {k: _coerce(where, k, v, types[k]) for k, v in table.items()}
    if not kw.get("name"):
        raise ValueError(f"{where}: every [[cell]] needs a name")
    c = Cell(**kw)
    if c.objective not in OBJECTIVES:
        raise ValueError(f"{where}: unknown objective {c.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if c.objective == "none" and not c.refine:
        raise ValueError(f"{where}: objective 'none' is direct asymmetric fine-tuning: it needs refine = true")
    if c.objective == "none" and c.prune:
        raise ValueError(f"{where}: pruning starts from an aligned student: objective 'none' cannot prune")
    if c.prune:
        from .progressive import parse_schedule
        try:
            parse_schedule(c.prune)
        except ValueError as e:
            raise ValueError(f"{where}: prune = {c.prune!r}: {e}") from None
    for k in ("align_steps", "align_batch_size", "refine_steps", "refine_batch_size", "num_negatives",
              "prune_align_steps", "qwen3_layers", "qwen3_hidden", "qwen3_heads", "qwen3_kv_heads",
              "qwen3_head_dim", "qwen3_ffn"):
        if getattr(c, k) < 1:
            raise ValueError(f"{where}: {k} must be >= 1, got {getattr(c, k)}")
    if c.dim < 0:
        raise ValueError(f"{where}: dim must be 0 (full width) or a positive truncation, got {c.dim}")
    return c


def parse_override(text: str) -> tuple[str, object]:
    """'align_steps=20' -> ('align_steps', 20); the value is read as TOML, else taken as a string."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. align_steps=20")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def load_config(path: str, overrides: list[str] | tuple = ()) -> StudyConfig:
    """Parse and check a study file; `overrides` are KEY=VALUE strings (see the module docstring)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"study config {path!r}: no such file")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    bad = sorted(set(doc) - {"study", "defaults", "cell"})
    if bad:
        raise ValueError(f"{path}: unknown table(s) {', '.join(bad)}; expected [study], [defaults], [[cell]]")
    study, defaults, cells = dict(doc.get("study", {})), dict(doc.get("defaults", {})), doc.get("cell", [])
    if not isinstance(cells, list) or not cells:
        raise ValueError(f"{path}: no [[cell]] entries: nothing to study")
    cells = [dict(c) for c in cells]
    s_types, c_types = _field_types(StudySettings), _field_types(Cell)
    for text in overrides:
        key, value = parse_override(text)
        if key in s_types:
            study[key] = value
        elif key in c_types and key not in ("name", "axis"):
            defaults[key] = value
            for c in cells:
                c[key] = value
        else:
            raise ValueError(f"--set {key}: unknown key; study keys: {', '.join(sorted(s_types))}; cell keys: "
                             f"{', '.join(sorted(k for k in c_types if k not in ('name', 'axis')))}")
    _check_keys(f"{path} [study]", study, StudySettings)
    _check_keys(f"{path} [defaults]", defaults, Cell)
    settings = StudySettings(**{k: _coerce(f"{path} [study]", k, v, s_types[k]) for k, v in study.items()})
    out, seen = [], set()
    for i, table in enumerate(cells):
        where = f"{path} [[cell]] #{i + 1}" + (f" ({table['name']!r})" if "name" in table else "")
        _check_keys(where, table, Cell)
        c = _cell(where, {**defaults, **table})
        if c.name in seen:
            raise ValueError(f"{where}: duplicate cell name {c.name!r}")
        seen.add(c.name)
        out.append(c)
    return StudyConfig(os.path.abspath(path), settings, out)
