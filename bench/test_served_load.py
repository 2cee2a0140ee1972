"""Served load: the real student (all-MiniLM-L6-v2) on CPU behind `Engine`, vs a server that encodes one
request at a time. Every server runs in its own process behind the same Unix-socket front-end
(`hlm_engine.socket_server`); the open-loop load generator runs in this process, so load generation
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

Target (issue 4): >= 5x the baseline's throughput at an equal or better p99. Compared at equal p99: for an
engine point (throughput T, p99 P), the one-at-a-time server's sustainable throughput at p99 P is bracketed
by its own measured points (p99 rises with load): below its slowest point whose p99 was worse than P (else
its capacity); the ratio T / that bound is a lower bound on the engine's advantage. Engine points at or past
capacity, or that fell behind (achieved < 97% of offered), do not count: an open-loop queue then grows
for as long as the run lasts, so p99 measures the run length. Baselines: the 1-thread engine against the
1-thread one-at-a-time server; the 2-core engines against the faster (by capacity) of the 1- and 2-thread
ones, the best a one-at-a-time server does with 2 cores. Also recorded: each engine
point against the baseline at the same fraction of capacity (where the engine carries 5x+ the traffic, so
its p99 is higher), and the service-time p99 with no queueing, which no batching server matches while
doing 5x the work (a batch never runs faster than a batch of one).

    HLM_DATA_DIR=/path/to/data pytest bench/test_served_load.py --benchmark-only -s
Writes bench/results/served_load.json and bench/results/served_load.png (latency vs load).
"""
import os
import tempfile

import numpy as np
import pytest

from served_load_client import ServerProcess, closed_loop, open_loop, ping_pong

LOADS = (0.25, 0.5, 0.75, 1.0, 1.25)
EXTRA_LOADS = (0.9,)   # kept apart ("extra_points"): finer near capacity, where the equal-p99 comparison is decided
CLIENTS = 16
POINT_S = float(os.environ.get("HLM_BENCH_LOAD_SECONDS", "5"))
BASE_POINT_S = 1.4 * POINT_S  # ~8x fewer requests per second than the engine: run longer for a steadier p99
SERVICE_N, BASE_CAP_N, ENGINE_CAP_N = 60, 300, 1500
CAP_OVERLOAD, CAP_PROBE_S = 1.1, 4.0   # capacity probe: 110% of the closed-loop capacity, open loop
TARGET_RATIO = 5.0
STABLE = 0.97   # an engine point counts only if it kept up: achieved >= 97% of offered (else p99 ~ run length)
# CPU batching: dispatch at once when idle (a batch of one costs ~10 ms here, so waiting to fill one only
# adds latency; under load batches fill while the model is busy), cap batches where per-query cost stops
# falling, and tokenize in the socket thread (one thread hand-off less per request: ~0.1 ms of CPU).
BATCHING = dict(max_batch_tokens=512, max_batch_size=64, max_delay_us=0, tokenize_in_caller=1)
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
    lo: its fastest measured point with p99 <= p99_ms; hi: its slowest measured point at or above lo whose p99
    was worse (p99 rises with load, so it cannot go that fast at this p99), else its capacity."""
    pts = base["points"] + base["extra_points"]
    lo = max((b["throughput_qps"] for b in pts if b["p99_ms"] <= p99_ms), default=0.0)
    worse = [b["throughput_qps"] for b in pts if b["p99_ms"] > p99_ms and b["throughput_qps"] >= lo]
    ceiling = max([base["capacity_qps"]] + [b["throughput_qps"] for b in pts])
    return lo, min(worse, default=ceiling)


def compare(engine: dict, base: dict) -> tuple[list, list, dict | None]:
    """Per engine point: against the baseline at the same fraction of its capacity, and at equal p99 (the
    target's terms: engine throughput / the most the baseline sustains at that p99, bounded from above).
    Returns the points, the extra points and the fastest one meeting the target (below capacity), or None."""
    rows = []
    same = {b["load_fraction"]: b for b in base["points"] + base["extra_points"]}
    for e in engine["points"] + engine["extra_points"]:
        b = same[e["load_fraction"]]
        lo, hi = baseline_qps_at_p99(base, e["p99_ms"])
        e = dict(e, throughput_vs_baseline=round(e["throughput_qps"] / b["throughput_qps"], 2),
                 p99_vs_baseline=round(e["p99_ms"] / b["p99_ms"], 3),
                 baseline_qps_at_equal_p99=[round(lo, 1), round(hi, 1)],
                 throughput_vs_baseline_at_equal_p99=round(e["throughput_qps"] / hi, 2))
        e["meets_target"] = bool(e["load_fraction"] < 1.0 and e["throughput_qps"] >= STABLE * e["offered_qps"]
                                 and e["throughput_vs_baseline_at_equal_p99"] >= TARGET_RATIO)
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
    text = (f"≥ {TARGET_RATIO:g}× one-at-a-time throughput at equal or better p99, compared at equal p99 (the "
            f"table compares equal % of capacity instead); engine below capacity")
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
    servers = benchmark.pedantic(measure_all, args=(list(bench_queries),), rounds=1, iterations=1)
    runs = runs_from(servers)
    met = [r for r in runs if r["meets_target"]]
    target = target_text(runs)
    out = {"model": "all-MiniLM-L6-v2", "clients": CLIENTS, "seconds_per_point": POINT_S, "engine": BATCHING,
           "command": "HLM_DATA_DIR=../shared/data .venv/bin/python -m pytest bench/test_served_load.py "
                      "--benchmark-only -s",
           "transport": "each server in its own process behind one Unix-socket front-end "
                        "(hlm_engine.socket_server), the load generator in another",
           "target": target, "runs": runs, "meets_target": bool(met),
           "engines_meeting_target": [r["engine_name"] for r in met],
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
