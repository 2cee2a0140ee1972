"""Served load: the real student (all-MiniLM-L6-v2) on CPU behind `Engine`, vs a server that encodes one
request at a time. Every server runs in its own process behind the same Unix-socket front-end
(`hlm_engine.serving.socket_server`); the open-loop load generator runs in this process, so load generation
never shares a GIL with serving.

Servers (SERVERS), all started at once and idle until measured:
  one at a time, 1 or 2 torch threads   - `encoder.encode([text])` per request, in arrival order
  engine, 1 thread / 2 threads          - `Engine`, one model thread with 1 or 2 intra-op threads
  engine, 2 workers x 1 thread          - two model threads, one intra-op thread each (2 cores, no barriers)
Per server: service time (one request in flight: no queueing); capacity C, the throughput it sustains under
open-loop overload (110% of its closed-loop capacity, every query queued at once); then offered load at
25/50/75/90/100/125% of *its own* C (90% is kept apart as an extra point; one-at-a-time points run 1.4x
longer: it serves far fewer requests per second): Poisson arrivals for HLM_BENCH_LOAD_SECONDS (default 5)
from CLIENTS client threads (a connection each); latency = reply - *scheduled* arrival (no coordinated
omission). Servers alternate point by point, so machine noise hits all of them.

Also measured first, in this process with nothing else running: raw encoding rates at one torch thread with
no transport (`raw_encoding`): batch 1, and batches of the engine's size on one and on two worker threads. Two
workers' rate over the batch-1 rate bounds what any batching server can reach on this machine against a
one-at-a-time server (which cannot use a second core for one query): the ceiling the served ratios are
read against.

Target (issue 4): >= 5x the baseline's throughput at an equal or better p99. Compared at equal p99: for an
engine point (throughput T, p99 P), the one-at-a-time server's sustainable throughput at p99 P is bracketed
by its own measured points, read as a p99 curve rising with throughput (each point's p99 the lowest
measured at its throughput or above: noise only inflates a p99, so this favours the baseline): below its
first point on that curve worse than P (else its capacity); the ratio T / that bound is a lower bound on the
engine's advantage. Judged only where the baseline has a measured point at or below P (else P is inside the
machine's noise floor). Engine points at or past capacity, or that fell behind (achieved < 97% of offered),
do not count: an open-loop queue then grows for as long as the run lasts, so p99 measures the run length.
Baselines: the 1-thread engine against the 1-thread one-at-a-time server; the 2-core engines against the faster (by capacity) of the 1- and 2-thread
ones, the best a one-at-a-time server does with 2 cores. Also recorded: each engine
point against the baseline at the same fraction of capacity (where the engine carries 5x+ the traffic, so
its p99 is higher), and the service-time p99 with no queueing, which no batching server matches while
doing 5x the work (a batch never runs faster than a batch of one).

    HLM_DATA_DIR=/path/to/data pytest bench/test_served_load.py --benchmark-only -s
Writes bench/results/served_load.json and bench/results/served_load.png (latency vs load).
"""
import os
import tempfile
import threading
import time

import numpy as np
import pytest

from served_load_client import ServerProcess, closed_loop, open_loop, ping_pong

LOADS = (0.25, 0.5, 0.75, 1.0, 1.25)
# Kept apart ("extra_points"): finer near capacity, where the one-at-a-time server's p99 turns up and the
# equal-p99 comparison is decided (its throughput at an engine point's p99 is bracketed by these).
EXTRA_LOADS = (0.85, 0.9, 0.95)
CLIENTS = 16
POINT_S = float(os.environ.get("HLM_BENCH_LOAD_SECONDS", "5"))
BASE_POINT_S = 1.4 * POINT_S  # ~8x fewer requests per second than the engine: run longer for a steadier p99
SERVICE_N, BASE_CAP_N, ENGINE_CAP_N = 60, 300, 1500
CAP_OVERLOAD, CAP_PROBE_S = 1.1, 4.0   # capacity probe: 110% of the closed-loop capacity, open loop
TARGET_RATIO = 5.0
STABLE = 0.97   # an engine point counts only if it kept up: achieved >= 97% of offered (else p99 ~ run length)
# CPU batching: dispatch at once when idle (a batch of one costs ~4 ms here, so waiting to fill one only
# adds latency; under load batches fill while the model is busy), cap batches where per-query cost stops
# falling (one thread: batch 16 ~590 q/s, 64 ~585: bigger batches only add latency), and tokenize in the
# socket thread (one thread hand-off less per request: ~0.1 ms of CPU).
BATCHING = dict(max_batch_tokens=128, max_batch_size=16, max_delay_us=0, tokenize_in_caller=1)
RAW_BATCH1_QUERIES, RAW_BATCHED_QUERIES, RAW_ROUNDS = 200, 1600, 3
SERVERS = {
    "one at a time, 1 thread": dict(mode="serial", threads=1),
    "one at a time, 2 threads": dict(mode="serial", threads=2),
    "engine, 1 thread": dict(mode="engine", threads=1, workers=1, **BATCHING),
    "engine, 2 threads": dict(mode="engine", threads=2, workers=1, **BATCHING),
    "engine, 2 workers x 1 thread": dict(mode="engine", threads=1, workers=2, **BATCHING),
}
CORES = {n: c["threads"] * c.get("workers", 1) for n, c in SERVERS.items()}


def ms(lat_s, q):
    return round(float(np.percentile(lat_s, q) * 1e3), 2)


def _delta(m1, m0, name):
    c = m1[name]["count"] - m0[name]["count"]
    return (m1[name]["sum"] - m0[name]["sum"]) / c if c else 0.0


def point(srv, queries, f, cap, seed):
    m0 = srv.metrics()
    r = open_loop(srv.path, queries, f * cap, BASE_POINT_S if srv.mode == "serial" else POINT_S, seed=seed,
                  clients=CLIENTS)
    row = {"load_fraction": f, "offered_qps": round(f * cap, 1), "requests": r["requests"],
           "throughput_qps": round(r["throughput_qps"], 1), "p50_ms": ms(r["latency_s"], 50),
           "p99_ms": ms(r["latency_s"], 99), "client_late_send_p99_ms": round(r["late_send_p99_ms"], 2)}
    m1 = srv.metrics()
    if m1:  # engine: what the batches looked like at this load
        row["mean_batch_size"] = round(_delta(m1, m0, "batch_size"), 1)
        row["mean_batch_ms"] = round(_delta(m1, m0, "compute_seconds") * 1e3, 2)
        row["mean_queue_wait_ms"] = round(_delta(m1, m0, "queue_wait_seconds") * 1e3, 2)
    return row


def raw_encoding(queries) -> dict:
    """In-process encoding rates (queries/s) at one torch thread, no transport, best of RAW_ROUNDS interleaved
    rounds: one query at a time (`encode([q])`, as the one-at-a-time server does), and batches of the engine's
    max_batch_size in arrival order (tokenized once, `embed_ids` per batch, as the engine's workers do) on one
    worker thread and on two at once. The one-at-a-time server cannot use a second core for one query, so
    two workers' batched rate over the batch-1 rate is the most any batching server reaches here."""
    import torch

    from hlm_engine import Encoder
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = Encoder.from_pretrained("minilm", backend="torch")
        b = BATCHING["max_batch_size"]
        one = queries[:RAW_BATCH1_QUERIES]
        ids = enc.tokenize(queries[:RAW_BATCHED_QUERIES])
        batches = [ids[i: i + b] for i in range(0, len(ids), b)]

        def run_batches():
            for batch in batches:
                enc.embed_ids(batch)

        def two_workers():
            ts = [threading.Thread(target=run_batches) for _ in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        run_batches()
        best = {"b1": float("inf"), "one": float("inf"), "two": float("inf")}
        for _ in range(RAW_ROUNDS):
            for key, fn in (("b1", lambda: [enc.encode([q], batch_size=1) for q in one]), ("one", run_batches),
                            ("two", two_workers)):
                t0 = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - t0)
    finally:
        torch.set_num_threads(saved)
    q1, qb, q2 = len(one) / best["b1"], len(ids) / best["one"], 2 * len(ids) / best["two"]
    return {"threads": 1, "batch1_qps": round(q1, 1), "batch_size": b, "batched_qps": round(qb, 1),
            "batched_2_workers_qps": round(q2, 1), "per_core_ratio": round(qb / q1, 2),
            "ceiling_ratio_2_cores": round(q2 / q1, 2)}


def measure_all(queries) -> dict:
    """Start every server (loading in parallel), then measure them side by side."""
    servers = {}
    with tempfile.TemporaryDirectory(prefix="hlm-served-") as d:
        try:
            for k, (name, cfg) in enumerate(SERVERS.items()):
                cfg = dict(cfg)
                servers[name] = ServerProcess(cfg.pop("mode"), cfg.pop("threads"), os.path.join(d, f"s{k}.sock"),
                                              **cfg)
            for s in servers.values():
                s.wait_ready()
            out = {n: {"config": SERVERS[n], "cores": CORES[n]} for n in servers}
            for n, s in servers.items():
                svc = ping_pong(s.path, queries[:SERVICE_N])
                out[n].update(service_p50_ms=ms(svc, 50), service_p99_ms=ms(svc, 99))
            for n, s in servers.items():
                n_cap = BASE_CAP_N if s.mode == "serial" else ENGINE_CAP_N
                out[n]["capacity_closed_loop_qps"] = round(closed_loop(s.path, queries[:n_cap]), 1)
            for n, s in servers.items():
                # Capacity = what it sustains under open-loop overload: requests one by one cost wake-ups
                # (and load-generator CPU on the same cores) that a closed loop's one big burst does not,
                # so the closed-loop figure overstates it (by ~20% here) and its "75%" would be saturated.
                r = open_loop(s.path, queries, CAP_OVERLOAD * out[n]["capacity_closed_loop_qps"], CAP_PROBE_S,
                              seed=99, clients=CLIENTS)
                out[n].update(capacity_qps=round(r["throughput_qps"], 1), points=[], extra_points=[])
            for k, f in enumerate(sorted(set(LOADS) | set(EXTRA_LOADS))):
                for n, s in servers.items():
                    key = "points" if f in LOADS else "extra_points"
                    out[n][key].append(point(s, queries, f, out[n]["capacity_qps"], seed=k))
        finally:
            for s in servers.values():
                s.close()
    return out


def baseline_qps_at_p99(base: dict, p99_ms: float) -> tuple[float, float]:
    """(lo, hi): the one-at-a-time server's sustainable throughput at a p99 of `p99_ms` lies in [lo, hi).
    Its p99 is read as a non-decreasing curve in throughput, each point taking the lowest p99 measured at its
    throughput or above: on a shared machine noise only ever inflates a p99 (a hiccup at 25% load read 26 ms
    against a 7.5 ms service p99), and this reading gives the benefit of that doubt to the baseline.
    lo: its fastest point at or below `p99_ms` on that curve (0.0 if none: the engine's p99 is inside the
    machine's noise floor, and the point is not judged); hi: the next faster point, else its capacity."""
    pts = sorted(base["points"] + base["extra_points"], key=lambda b: b["throughput_qps"])
    curve, floor = [], float("inf")
    for b in reversed(pts):
        floor = min(floor, b["p99_ms"])
        curve.append((b["throughput_qps"], floor))
    curve.reverse()
    lo = max((t for t, p in curve if p <= p99_ms), default=0.0)
    ceiling = max([base["capacity_qps"]] + [t for t, _ in curve])
    return lo, min((t for t, p in curve if p > p99_ms and t > lo), default=ceiling)


def compare(engine: dict, base: dict) -> tuple[list, list, dict | None]:
    """Per engine point: against the baseline at the same fraction of its capacity, and at equal p99 (the
    target's terms: engine throughput / the most the baseline sustains at that p99, bounded from above).
    A point is judged when it is below capacity, kept up with its offered load, and its p99 lies within the
    baseline's measured curve. Returns the points, the extra points and the fastest judged one meeting the
    target, or None."""
    rows = []
    same = {b["load_fraction"]: b for b in base["points"] + base["extra_points"]}
    for e in engine["points"] + engine["extra_points"]:
        b = same[e["load_fraction"]]
        lo, hi = baseline_qps_at_p99(base, e["p99_ms"])
        e = dict(e, throughput_vs_baseline=round(e["throughput_qps"] / b["throughput_qps"], 2),
                 p99_vs_baseline=round(e["p99_ms"] / b["p99_ms"], 3),
                 baseline_qps_at_equal_p99=[round(lo, 1), round(hi, 1)],
                 throughput_vs_baseline_at_equal_p99=round(e["throughput_qps"] / hi, 2))
        e["judged"] = bool(e["load_fraction"] < 1.0 and e["throughput_qps"] >= STABLE * e["offered_qps"] and lo > 0)
        e["meets_target"] = bool(e["judged"] and e["throughput_vs_baseline_at_equal_p99"] >= TARGET_RATIO)
        rows.append(e)
    best = max((r for r in rows if r["meets_target"]), key=lambda r: r["throughput_qps"], default=None)
    n = len(engine["points"])
    return rows[:n], rows[n:], best


def baseline_for(name: str, servers: dict) -> str:
    """The faster (by capacity) one-at-a-time server using at most as many cores as engine `name`."""
    cands = [n for n in servers if SERVERS[n]["mode"] == "serial" and CORES[n] <= CORES[name]]
    return max(cands, key=lambda n: servers[n]["capacity_qps"])


def runs_from(servers: dict) -> list[dict]:
    """One run per engine, paired with its baseline (the layout `hlm report` reads)."""
    runs = []
    for n, e in servers.items():
        if SERVERS[n]["mode"] != "engine":
            continue
        b = baseline_for(n, servers)
        points, extra, best = compare(e, servers[b])
        cfg = SERVERS[n]
        label = cfg["threads"] if cfg["workers"] == 1 else f"{cfg['workers']} workers × {cfg['threads']}"
        runs.append({"torch_threads": label, "cores": CORES[n], "engine_name": n, "baseline_name": b,
                     "baseline": servers[b], "engine": dict(e, points=points, extra_points=extra),
                     "capacity_ratio": round(e["capacity_qps"] / servers[b]["capacity_qps"], 2),
                     "best_point_meeting_target": best, "meets_target": best is not None})
    return runs


def target_text(runs: list[dict]) -> str:
    """The target and, when met, its best instance (what `hlm report` prints beside met / not met)."""
    text = (f"≥ {TARGET_RATIO:g}× one-at-a-time throughput at equal or better p99, compared at equal p99 "
            f"(the table's last column), engine points below capacity")
    met = [r for r in runs if r["meets_target"]]
    if met:
        r = max(met, key=lambda r: r["best_point_meeting_target"]["throughput_qps"])
        p = r["best_point_meeting_target"]
        text += (f". Best: {r['engine_name']} at {100 * p['load_fraction']:.0f}% load, {p['throughput_qps']:.0f} "
                 f"q/s with p99 {p['p99_ms']:.0f} ms, where one at a time sustains < "
                 f"{p['baseline_qps_at_equal_p99'][1]:.0f} q/s (≥ {p['throughput_vs_baseline_at_equal_p99']:.1f}×)")
    return text


def plot(servers, runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hlm_engine.io import atomic_path
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    colors = {"one at a time, 1 thread": "tab:gray", "one at a time, 2 threads": "black",
              "engine, 1 thread": "tab:blue", "engine, 2 threads": "tab:orange",
              "engine, 2 workers x 1 thread": "tab:green"}
    for j, cores in enumerate((1, 2)):
        top, bot = axes[0, j], axes[1, j]
        engines = [r["engine_name"] for r in runs if r["cores"] == cores]
        names = [n for n in servers if SERVERS[n]["mode"] == "serial" and CORES[n] <= cores] + engines
        for n in names:
            rows = sorted(servers[n]["points"] + servers[n]["extra_points"], key=lambda r: r["load_fraction"])
            x = [100 * r["load_fraction"] for r in rows]
            top.plot(x, [r["p50_ms"] for r in rows], "o-", color=colors[n], label=f"{n}: p50")
            top.plot(x, [r["p99_ms"] for r in rows], "s--", color=colors[n], label=f"{n}: p99")
            bot.plot([r["throughput_qps"] for r in rows], [r["p99_ms"] for r in rows], "s--", color=colors[n],
                     label=n)
        base = max((n for n in names if SERVERS[n]["mode"] == "serial"), key=lambda n: servers[n]["capacity_qps"])
        rows = sorted(servers[base]["points"] + servers[base]["extra_points"], key=lambda r: r["load_fraction"])
        bot.plot([TARGET_RATIO * r["throughput_qps"] for r in rows], [r["p99_ms"] for r in rows], ":",
                 color="tab:red", label=f"{TARGET_RATIO:g}x {base} (target: engine right of / below it)")
        top.set(xlabel="offered load (% of each server's own capacity)", ylabel="latency (ms)", yscale="log",
                title=f"{cores} core(s): latency vs offered load")
        bot.set(xlabel="achieved throughput (queries/s)", ylabel="p99 latency (ms)", yscale="log",
                title=f"{cores} core(s): p99 vs achieved throughput")
        top.legend(fontsize=7)
        bot.legend(fontsize=7)
    fig.suptitle("all-MiniLM-L6-v2 on CPU: Engine vs one request at a time, each in its own process behind the "
                 "same Unix-socket front-end, open-loop Poisson load", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def test_served_load(benchmark, bench_queries, machine_info, write_result):
    load_before = machine_info()["loadavg_1_5_15"]
    raw = raw_encoding(list(bench_queries))
    servers = benchmark.pedantic(measure_all, args=(list(bench_queries),), rounds=1, iterations=1)
    runs = runs_from(servers)
    met = [r for r in runs if r["meets_target"]]
    target = target_text(runs)
    out = {"model": "all-MiniLM-L6-v2", "clients": CLIENTS, "seconds_per_point": POINT_S, "engine": BATCHING,
           "command": "HLM_DATA_DIR=../shared/data .venv/bin/python -m pytest bench/test_served_load.py "
                      "--benchmark-only -s",
           "transport": "each server in its own process behind one Unix-socket front-end "
                        "(hlm_engine.serving.socket_server), the load generator in another",
           "raw_encoding": raw, "target": target, "runs": runs, "meets_target": bool(met),
           "engines_meeting_target": [r["engine_name"] for r in met],
           "machine": {**machine_info(), "loadavg_before_1_5_15": load_before}}
    path = write_result("served_load", out)
    png = os.path.join(os.path.dirname(path), "served_load.png")
    plot(servers, runs, png)
    benchmark.extra_info.update({"meets_target": out["meets_target"]})
    print(f"\nraw, 1 thread: batch 1 {raw['batch1_qps']:.0f} q/s, batch {raw['batch_size']} {raw['batched_qps']:.0f} "
          f"q/s ({raw['per_core_ratio']:.2f}x), 2 workers {raw['batched_2_workers_qps']:.0f} q/s: ceiling on 2 cores vs "
          f"one at a time {raw['ceiling_ratio_2_cores']:.2f}x")
    for n, s in servers.items():
        print(f"{n:>30}: service p50 {s['service_p50_ms']:5.1f} p99 {s['service_p99_ms']:5.1f} ms, "
              f"capacity {s['capacity_qps']:4.0f} q/s")
    for run in runs:
        e, b = run["engine"], run["baseline"]
        print(f"\n[{run['engine_name']}] vs [{run['baseline_name']}]: capacity {run['capacity_ratio']:.2f}x")
        print(f"{'load':>5} | {'base q/s':>8} {'p50':>7} {'p99':>7} | {'eng q/s':>8} {'p50':>7} {'p99':>7} "
              f"{'batch':>6} | {'x thr':>6} {'p99 ok':>6} | {'base q/s @ eng p99':>18} {'x @ p99':>7}")
        by_f = {r["load_fraction"]: r for r in b["points"] + b["extra_points"]}
        for er in sorted(e["points"] + e["extra_points"], key=lambda r: r["load_fraction"]):
            br = by_f[er["load_fraction"]]
            lo, hi = er["baseline_qps_at_equal_p99"]
            print(f"{br['load_fraction']:5.2f} | {br['throughput_qps']:8.0f} {br['p50_ms']:7.1f} "
                  f"{br['p99_ms']:7.1f} | {er['throughput_qps']:8.0f} {er['p50_ms']:7.1f} {er['p99_ms']:7.1f} "
                  f"{er['mean_batch_size']:6.1f} | {er['throughput_vs_baseline']:6.2f} "
                  f"{str(er['p99_ms'] <= br['p99_ms']):>6} | {f'[{lo:.0f}, {hi:.0f})':>18} "
                  f"{er['throughput_vs_baseline_at_equal_p99']:7.2f}")
    print(f"\nmeets target: {out['meets_target']} {out['engines_meeting_target']}; load average {load_before} -> "
          f"{out['machine']['loadavg_1_5_15']}\n{target}")
    print(f"-> {path}, {png}")
    if os.environ.get("HLM_BENCH_STRICT") and not out["meets_target"]:
        pytest.fail("target missed")
