"""CPU latency and throughput of the study's models, measured side by side in one process.

Per model, at a fixed torch thread count (default 1: on a shared machine, extra OpenMP threads spin-wait for
cores other processes hold and batch-1 latency then measures the neighbours):
    batch-1 latency: `encode([q])` wall time over real dev queries -> p50 / p90 / p99 (ms, every sample of
                     every round)
    throughput:      `encode(qs, batch_size=64)` over `throughput_queries` real queries -> queries/s (best round)
Rounds interleave the models, and the order rotates every round, so load on the machine hits every row alike.
Results are cached per set of models (their weight checksums) and settings: a new cell re-measures every
model together, so all rows always come from one run.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from hlm_engine.io import read_json, write_json

from .study_config import stable_hash

BATCH = 64


def measure(encoders: dict, latency_queries: list[str], throughput_queries: list[str], rounds: int,
            progress: bool = True) -> dict[str, dict]:
    """{name: {p50_ms, p90_ms, p99_ms, qps_b64}} for encoders {name: Encoder}, interleaved rounds."""
    from tqdm import tqdm
    names = list(encoders)
    lat = {k: [] for k in names}
    qps = {k: [] for k in names}
    for enc in encoders.values():  # warm-up: first-call allocations, thread-pool start
        enc.encode(latency_queries[:4], batch_size=1)
        enc.encode(throughput_queries[:BATCH], batch_size=BATCH)
    bar = tqdm(total=rounds * len(names), desc="speed", unit="model", disable=not progress)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            enc = encoders[name]
            for q in latency_queries:
                t = time.perf_counter()
                enc.encode([q], batch_size=1)
                lat[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            enc.encode(throughput_queries, batch_size=BATCH)
            qps[name].append(len(throughput_queries) / (time.perf_counter() - t))
            bar.update(1)
    bar.close()
    return {k: {"p50_ms": 1e3 * float(np.median(lat[k])), "p90_ms": 1e3 * float(np.percentile(lat[k], 90)),
                "p99_ms": 1e3 * float(np.percentile(lat[k], 99)), "qps_b64": float(max(qps[k])),
                "qps_b64_rounds": [round(x, 1) for x in qps[k]]} for k in names}


def _queries(data_dir: str | None, n: int, seed: int) -> list[str]:
    """n real dev queries (seeded; repeated when the split has fewer)."""
    from hlm_engine.retrieval.data import load_homedepot
    dev = load_homedepot("dev", data_dir).queries
    order = np.random.default_rng([seed, 17]).permutation(len(dev))
    picked = [dev[i] for i in order[:n]]
    return (picked * (1 + n // max(1, len(picked))))[:n]


def cached_speed(study, models: dict[str, tuple[str, str]]) -> dict:
    """Speed of every distinct model in {name: (folder, weights checksum)}; measured together, or cached.
    Returns {"models": {checksum: stats}, "settings": ..., "stamp": machine stamp of the measuring run}."""
    s = study.s
    by_checksum: dict[str, str] = {}
    for folder, checksum in models.values():
        by_checksum.setdefault(checksum, folder)
    settings = {"threads": s.threads, "latency_queries": s.latency_queries,
                "throughput_queries": s.throughput_queries, "rounds": s.speed_rounds, "batch": BATCH,
                "max_length": s.max_length, "data": study.shared["data_dir"], "seed": s.seed}
    path = os.path.join(study.work, "speed", stable_hash({"models": sorted(by_checksum), **settings}) + ".json")
    if os.path.exists(path) and not study.remeasure:
        return read_json(path)
    study.computed.append(f"speed:{os.path.basename(path)}")
    from hlm_engine.report.machine import machine_stamp

    from .common import load_encoder
    before = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        encs = {cs: load_encoder(folder, s.max_length, "model") for cs, folder in by_checksum.items()}
        lat_q = _queries(study.data_dir, s.latency_queries, s.seed)
        thr_q = _queries(study.data_dir, s.throughput_queries, s.seed + 1)
        stats = measure(encs, lat_q, thr_q, s.speed_rounds, study.progress)
        stamp = machine_stamp(threads=torch.get_num_threads())
    finally:
        torch.set_num_threads(before)
    out = {"models": stats, "settings": settings, "stamp": stamp,
           "names": {cs: [n for n, (_, c) in models.items() if c == cs] for cs in by_checksum}}
    write_json(path, out)
    return out
