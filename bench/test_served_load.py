"""Served load: the real student (all-MiniLM-L6-v2) on CPU behind `Engine`, vs a server that encodes one
request at a time. Every server runs in its own process behind the same Unix-socket front-end
(`hlm_engine.socket_server`); the open-loop load generator runs in this process, so load generation
never shares a GIL with serving.

Servers (SERVERS), all started at once and idle until measured:
  one at a time, 1 or 2 torch threads   - `encoder.encode([text])` per request, in arrival order
  engine, 1 thread / 2 threads          - `Engine`, one model thread with 1 or 2 intra-op threads
  engine, 2 workers x 1 thread          - two model threads, one intra-op thread each (2 cores, no barriers)
Per server: service time (one request in flight: no queueing), capacity C (every query queued at once:
completed / wall), then offered load at 25/50/75/100/125% of *its own* C: Poisson arrivals for
HLM_BENCH_LOAD_SECONDS (default 5) from CLIENTS client threads (a connection each); latency = reply -
*scheduled* arrival (no coordinated omission). Servers alternate point by point, so machine noise hits all.

Target (issue 4): >= 5x the baseline's throughput at an equal or better p99. Each engine point is compared
with its baseline's point at the same fraction of capacity (the same operating rule for both servers); the
verdict counts loads below capacity only (at and past capacity an open-loop queue grows for as long as the
run lasts, so p99 measures the run length). Baselines: the 1-thread engine against the 1-thread
one-at-a-time server; the 2-core engines against the faster (by capacity) of the 1- and 2-thread
one-at-a-time servers, the best a one-at-a-time server does with 2 cores. The service-time p99 (no
queueing) is recorded too: no batching server matches it while doing 5x the work, since a batch never
runs faster than a batch of one.

    HLM_DATA_DIR=/path/to/data pytest bench/test_served_load.py --benchmark-only -s
Writes bench/results/served_load.json and bench/results/served_load.png (latency vs load).
"""
import os
import tempfile

import numpy as np
import pytest

from served_load_client import ServerProcess, closed_loop, open_loop, ping_pong

LOADS = (0.25, 0.5, 0.75, 1.0, 1.25)
CLIENTS = 16
POINT_S = float(os.environ.get("HLM_BENCH_LOAD_SECONDS", "5"))
SERVICE_N, BASE_CAP_N, ENGINE_CAP_N = 100, 300, 1500
TARGET_RATIO = 5.0
# CPU batching: dispatch at once when idle (a batch of one costs ~10 ms here, so waiting to fill one only
# adds latency; under load batches fill while the model is busy), and cap batches where per-query cost
# stops falling (large batches fall out of cache).
BATCHING = dict(max_batch_tokens=512, max_batch_size=64, max_delay_us=0)
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
    r = open_loop(srv.path, queries, f * cap, POINT_S, seed=seed, clients=CLIENTS)
    row = {"load_fraction": f, "offered_qps": round(f * cap, 1), "requests": r["requests"],
           "throughput_qps": round(r["throughput_qps"], 1), "p50_ms": ms(r["latency_s"], 50),
           "p99_ms": ms(r["latency_s"], 99), "client_late_send_p99_ms": round(r["late_send_p99_ms"], 2)}
    m1 = srv.metrics()
    if m1:  # engine: what the batches looked like at this load
        row["mean_batch_size"] = round(_delta(m1, m0, "batch_size"), 1)
        row["mean_batch_ms"] = round(_delta(m1, m0, "compute_seconds") * 1e3, 2)
        row["mean_queue_wait_ms"] = round(_delta(m1, m0, "queue_wait_seconds") * 1e3, 2)
    return row


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
                out[n]["capacity_qps"] = round(closed_loop(s.path, queries[:n_cap]), 1)
                out[n]["points"] = []
            for k, f in enumerate(LOADS):
                for n, s in servers.items():
                    out[n]["points"].append(point(s, queries, f, out[n]["capacity_qps"], seed=k))
        finally:
            for s in servers.values():
                s.close()
    return out


def compare(engine: dict, base: dict) -> tuple[list, dict | None]:
    """Adds throughput and p99 against the baseline's point at the same fraction of capacity to each engine
    point; returns the points and the highest load meeting the target (or None)."""
    rows = []
    for b, e in zip(base["points"], engine["points"]):
        e = dict(e, throughput_vs_baseline=round(e["throughput_qps"] / b["throughput_qps"], 2),
                 p99_vs_baseline=round(e["p99_ms"] / b["p99_ms"], 3))
        e["meets_target"] = bool(e["load_fraction"] < 1.0 and e["throughput_vs_baseline"] >= TARGET_RATIO
                                 and e["p99_ms"] <= b["p99_ms"])
        rows.append(e)
    return rows, max((r for r in rows if r["meets_target"]), key=lambda r: r["load_fraction"], default=None)


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
        points, best = compare(e, servers[b])
        cfg = SERVERS[n]
        label = cfg["threads"] if cfg["workers"] == 1 else f"{cfg['workers']} workers × {cfg['threads']}"
        runs.append({"torch_threads": label, "cores": CORES[n], "engine_name": n, "baseline_name": b,
                     "baseline": servers[b], "engine": dict(e, points=points),
                     "capacity_ratio": round(e["capacity_qps"] / servers[b]["capacity_qps"], 2),
                     "best_point_meeting_target": best, "meets_target": best is not None})
    return runs


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
            rows = servers[n]["points"]
            x = [100 * r["load_fraction"] for r in rows]
            top.plot(x, [r["p50_ms"] for r in rows], "o-", color=colors[n], label=f"{n}: p50")
            top.plot(x, [r["p99_ms"] for r in rows], "s--", color=colors[n], label=f"{n}: p99")
            bot.plot([r["throughput_qps"] for r in rows], [r["p99_ms"] for r in rows], "s--", color=colors[n],
                     label=n)
        base = max(servers[n]["capacity_qps"] for n in names if SERVERS[n]["mode"] == "serial")
        bot.axvline(TARGET_RATIO * base, color="tab:red", ls=":", label=f"{TARGET_RATIO:g}x one-at-a-time capacity")
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
    servers = benchmark.pedantic(measure_all, args=(list(bench_queries),), rounds=1, iterations=1)
    runs = runs_from(servers)
    met = [r["engine_name"] for r in runs if r["meets_target"]]
    out = {"model": "all-MiniLM-L6-v2", "clients": CLIENTS, "seconds_per_point": POINT_S, "engine": BATCHING,
           "command": "HLM_DATA_DIR=../shared/data .venv/bin/python -m pytest bench/test_served_load.py "
                      "--benchmark-only -s",
           "transport": "each server in its own process behind one Unix-socket front-end "
                        "(hlm_engine.socket_server), the load generator in another",
           "target": f"≥ {TARGET_RATIO:g}× one-at-a-time throughput at p99 ≤ its p99, both at the same fraction "
                     f"(< 100%) of their own capacity; baseline: the faster one-at-a-time server on as many cores",
           "runs": runs, "meets_target": bool(met), "engines_meeting_target": met,
           "machine": {**machine_info(), "loadavg_before_1_5_15": load_before}}
    path = write_result("served_load", out)
    png = os.path.join(os.path.dirname(path), "served_load.png")
    plot(servers, runs, png)
    benchmark.extra_info.update({"meets_target": out["meets_target"]})
    print()
    for n, s in servers.items():
        print(f"{n:>30}: service p50 {s['service_p50_ms']:5.1f} p99 {s['service_p99_ms']:5.1f} ms, "
              f"capacity {s['capacity_qps']:4.0f} q/s")
    for run in runs:
        e, b = run["engine"], run["baseline"]
        print(f"\n[{run['engine_name']}] vs [{run['baseline_name']}]: capacity {run['capacity_ratio']:.2f}x")
        print(f"{'load':>5} | {'base q/s':>8} {'p50':>7} {'p99':>7} | {'eng q/s':>8} {'p50':>7} {'p99':>7} "
              f"{'batch':>6} | {'x thr':>6} {'p99 ok':>6}")
        for br, er in zip(b["points"], e["points"]):
            print(f"{br['load_fraction']:5.2f} | {br['throughput_qps']:8.0f} {br['p50_ms']:7.1f} "
                  f"{br['p99_ms']:7.1f} | {er['throughput_qps']:8.0f} {er['p50_ms']:7.1f} {er['p99_ms']:7.1f} "
                  f"{er['mean_batch_size']:6.1f} | {er['throughput_vs_baseline']:6.2f} "
                  f"{str(er['p99_ms'] <= br['p99_ms']):>6}")
    print(f"\nmeets target: {out['meets_target']} {met}; load average {load_before} -> "
          f"{out['machine']['loadavg_1_5_15']}")
    print(f"-> {path}, {png}")
    if os.environ.get("HLM_BENCH_STRICT") and not out["meets_target"]:
        pytest.fail("target missed")
