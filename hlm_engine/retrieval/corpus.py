"""Offline corpus encoding: the teacher encodes every ad once, into fp16 shards with a manifest.

    manifest = encode_corpus("mpnet", ids, texts, "emb/", shard_size=8192, batch_size=64)
    ids, vecs = load_embeddings("emb/")            # list[str], np.float32 [N, d] in corpus order

Layout of `out_dir`:
    plan.json              what is being encoded (model + checksum, corpus checksum, sharding); written first
    shards/00000.ids.json  doc ids of shard 0 (rows [0, shard_size) of the corpus, in corpus order)
    shards/00000.npy       float16 [rows, d]; written last and atomically, so it is the shard's commit mark
    manifest.json          plan + the shard list; written only once every shard exists

Resumable: a restarted run keeps every shard whose .npy exists and encodes only the rest. A run against a
different model or corpus refuses (it would mix two embedding spaces). fp16 halves disk and load time; the
teacher's normalised outputs lie in [-1, 1] where fp16 keeps ~3 decimal digits (cosine error ~1e-4).

Several processes: under `torchrun` (WORLD_SIZE > 1) each rank encodes shards i with i % world == rank
(gloo on CPU); rank 0 writes the plan before and the manifest after a barrier.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import time

import numpy as np

from hlm_engine.identity import model_identity  # noqa: F401  (re-exported: corpus manifests pin it)
from hlm_engine.io import read_json, save_npy, sha256_file, write_json

log = logging.getLogger("hlm.corpus")

FORMAT = "hlm-corpus-embeddings/1"
# Plan fields that must agree for a restarted run to reuse the shards already written. The sharding is not
# one of them: it is only how the rows are split into files. A finished encoding of the same model and corpus
# is reused whatever its shard size, and an unfinished one resumes with the shard size it was started with.
_RESUME_KEYS = ("format", "model", "dim", "normalize", "dtype", "count", "corpus_checksum")


def corpus_checksum(ids: list[str], texts: list[str]) -> str:
    """sha256 over (id, text) pairs: pins shards to the exact corpus rows and order."""
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(i.encode("utf-8") + b"\x1f" + t.encode("utf-8") + b"\x1e")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- layout
def _shard_paths(out_dir: str, i: int) -> tuple[str, str]:
    base = os.path.join(out_dir, "shards", f"{i:05d}")
    return base + ".npy", base + ".ids.json"


def _shard_done(out_dir: str, i: int, rows: int, dim: int) -> bool:
    npy, ids = _shard_paths(out_dir, i)
    if not (os.path.exists(npy) and os.path.exists(ids)):
        return False
    arr = np.load(npy, mmap_mode="r")
    return arr.shape == (rows, dim) and arr.dtype == np.float16


def read_manifest(out_dir: str) -> dict:
    """The manifest of a finished encoding; a clear error for a missing or unfinished one."""
    path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(path):
        return read_json(path)
    plan_path = os.path.join(out_dir, "plan.json")
    if os.path.exists(plan_path):
        plan = read_json(plan_path)
        done = sum(_shard_done(out_dir, i, r, plan["dim"]) for i, r in enumerate(_shard_rows(plan)))
        raise ValueError(f"{out_dir}: encoding unfinished ({done} of {plan['num_shards']} shards written); "
                         "run encode_corpus / `hlm encode-corpus` again to resume it")
    raise FileNotFoundError(f"{out_dir}: no manifest.json (not an encode-corpus output folder)")


def _shard_rows(plan: dict) -> list[int]:
    n, s = plan["count"], plan["shard_size"]
    return [min(s, n - i * s) for i in range(plan["num_shards"])]


def load_embeddings(out_dir: str) -> tuple[list[str], np.ndarray]:
    """(ids, float32 [N, d]) of a finished encoding, in corpus order."""
    m = read_manifest(out_dir)
    vecs = np.empty((m["count"], m["dim"]), dtype=np.float32)
    ids: list[str] = []
    for i, rows in enumerate(_shard_rows(m)):
        npy, idp = _shard_paths(out_dir, i)
        arr = np.load(npy)
        sid = read_json(idp)
        if arr.shape != (rows, m["dim"]) or len(sid) != rows:
            raise ValueError(f"{npy}: shape {arr.shape} / {len(sid)} ids, manifest expects ({rows}, {m['dim']})")
        vecs[len(ids): len(ids) + rows] = arr
        ids.extend(sid)
    return ids, vecs


# ---------------------------------------------------------------------------------------------- encoding
def _dist():
    """(rank, world, torch.distributed or None). Initialises gloo when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist
    if world > 1:
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), dist
    return 0, 1, None


def _check_resume(old: dict, new: dict, out_dir: str) -> None:
    diff = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    if diff:
        detail = "; ".join(f"{k}: folder has {old.get(k)!r}, this run {new.get(k)!r}" for k in diff)
        raise ValueError(f"{out_dir}: holds an encoding of a different model/corpus ({detail}). Refusing to "
                         "mix embedding spaces: use another --out folder or delete this one")


def _encode_shard(enc, texts: list[str], batch_size: int, normalize: bool, pbar) -> np.ndarray:
    """Length-sorted batches (similar lengths pack tightly) -> float16 [n, d] in input order."""
    if hasattr(enc, "tokenize") and hasattr(enc, "embed_ids"):
        ids = enc.tokenize(texts)
        out = np.empty((len(ids), enc.dim), dtype=np.float16)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            out[idx] = enc.embed_ids([ids[i] for i in idx], normalize)
            if pbar is not None:
                pbar.update(len(idx))
        return out
    # An Engine or other encoder: hand it chunks and let it batch them itself.
    parts = []
    for s in range(0, len(texts), batch_size * 16):
        parts.append(np.asarray(enc.encode(texts[s: s + batch_size * 16]), dtype=np.float32))
        if pbar is not None:
            pbar.update(len(parts[-1]))
    return np.concatenate(parts).astype(np.float16)


def encode_corpus(encoder_or_name, ids: list[str], texts: list[str], out_dir: str, shard_size: int = 8192,
                  batch_size: int = 64, source: str | None = None, show_progress: bool = True) -> dict:
    """Encode `texts` (keyed by `ids`) into `out_dir`; resumable; returns the manifest.

    Returns at once, without loading the model, when `out_dir` already holds this exact encoding."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} texts")
    if not ids:
        raise ValueError("empty corpus: nothing to encode")
    if len(set(ids)) != len(ids):
        seen, dup = set(), None
        for i in ids:
            if i in seen:
                dup = i
                break
            seen.add(i)
        raise ValueError(f"duplicate doc id {dup!r}: ids must be unique (they key the index)")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size}, {batch_size}")
    ident = model_identity(encoder_or_name)
    if ident["checksum"] is None:
        log.warning("model %s has no saved weights: the manifest cannot pin it to a checksum", ident["name"])
    n = len(ids)
    plan = {"format": FORMAT, "model": {"name": ident["name"], "checksum": ident["checksum"]},
            "dim": ident["dim"], "normalize": ident["normalize"], "dtype": "float16", "count": n,
            "shard_size": int(shard_size), "num_shards": (n + shard_size - 1) // shard_size,
            "corpus_checksum": corpus_checksum(ids, texts),
            "source": {"file": os.path.basename(source), "sha256": sha256_file(source)} if source else None}
    man_path, plan_path = os.path.join(out_dir, "manifest.json"), os.path.join(out_dir, "plan.json")
    if os.path.exists(man_path):
        _check_resume(read_json(man_path), plan, out_dir)
        return read_json(man_path)

    rank, world, dist = _dist()
    if rank == 0:
        os.makedirs(os.path.join(out_dir, "shards"), exist_ok=True)
        if os.path.exists(plan_path):
            _check_resume(read_json(plan_path), plan, out_dir)
        else:
            write_json(plan_path, plan)
        for stale in glob.glob(os.path.join(out_dir, "shards", ".*.tmp")):  # left by a killed run
            os.remove(stale)
    if dist is not None:
        dist.barrier()
        _check_resume(read_json(plan_path), plan, out_dir)
    started = read_json(plan_path)  # resume with the sharding the folder was started with
    shard_size = int(started["shard_size"])
    plan = dict(plan, shard_size=shard_size, num_shards=started["num_shards"])

    rows = _shard_rows(plan)
    todo = [i for i in range(plan["num_shards"]) if i % world == rank and not _shard_done(out_dir, i, rows[i],
                                                                                            plan["dim"])]
    if todo:
        enc = encoder_or_name
        if isinstance(enc, (str, os.PathLike)):
            from hlm_engine.encoder import Encoder
            enc = Encoder.from_pretrained(ident["folder"])
        total = sum(rows[i] for i in todo)
        log.info("rank %d/%d: encoding %d docs in %d shard(s) into %s", rank, world, total, len(todo), out_dir)
        pbar = None
        if show_progress:
            from tqdm import tqdm
            pbar = tqdm(total=total, unit="doc", unit_scale=True, desc=f"encode-corpus[{rank}]", position=rank)
        t0 = time.perf_counter()
        for i in todo:
            s = i * shard_size
            arr = _encode_shard(enc, texts[s: s + rows[i]], batch_size, plan["normalize"], pbar)
            npy, idp = _shard_paths(out_dir, i)
            write_json(idp, ids[s: s + rows[i]])
            save_npy(npy, arr)  # last: its presence marks the shard finished
        if pbar is not None:
            pbar.close()
        dt = time.perf_counter() - t0
        log.info("rank %d: %d docs in %.1f s (%.0f docs/s)", rank, total, dt, total / max(dt, 1e-9))

    if dist is not None:
        dist.barrier()
    if rank == 0:
        missing = [i for i in range(plan["num_shards"]) if not _shard_done(out_dir, i, rows[i], plan["dim"])]
        if missing:
            raise RuntimeError(f"{out_dir}: shards {missing[:10]} missing after encoding (a rank failed?)")
        manifest = dict(plan, shards=[{"file": f"shards/{i:05d}.npy", "ids": f"shards/{i:05d}.ids.json",
                                       "rows": r} for i, r in enumerate(rows)],
                        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json(man_path, manifest)
    if dist is not None:
        dist.barrier()
    return read_json(man_path)
