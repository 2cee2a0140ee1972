"""Served load: the real student (all-MiniLM-L6-v2) on CPU behind `Engine`, vs a server that encodes one
request at a time, both in their own process behind the same Unix-socket front-end
(`hlm_engine.socket_server`), driven by an open-loop load generator in this process (so load generation
never shares a GIL with serving).

Per torch thread count (HLM_BENCH_THREADS, default "1,2"; both servers get the same count):
  1. service time: one request in flight at a time (ping-pong), p50 / p99 - no queueing at all;
  2. capacity C of each server: every query queued at once, C = completed / wall;
  3. offered load at 25/50/75/100/125% of *each server's own* C: Poisson arrivals for HLM_BENCH_LOAD_SECONDS
     (default 6) from CLIENTS client threads, one connection each; latency = reply - *scheduled* arrival
     (no coordinated omission). Engine and baseline points alternate, so machine noise hits both.

Target (issue 4): >= 5x the baseline's throughput at a p99 equal or better than the baseline's. Each engine
point is compared with the baseline point at the same fraction of its own capacity (the same operating
rule for both servers); the verdict counts only loads both can sustain (< 100%: at and past capacity an
open-loop queue grows for as long as the run lasts, so p99 measures the run length). The p99 with no
queueing at all (step 1) is recorded too: no batching server can match it while doing 5x the work,
since a batch never runs faster than a batch of one.

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
POINT_S = float(os.environ.get("HLM_BENCH_LOAD_SECONDS", "6"))
THREADS = tuple(int(x) for x in os.environ.get("HLM_BENCH_THREADS", "1,2").split(","))
SERVICE_N, BASE_CAP_N, ENGINE_CAP_N = 100, 300, 1500
ENGINE_CFG = dict(max_batch_tokens=8192, max_batch_size=256, max_delay_us=2000)
TARGET_RATIO = 5.0


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


def measure(threads, queries, sock_dir):
    base = ServerProcess("serial", threads, os.path.join(sock_dir, f"serial{threads}.sock"))
    try:
        eng = ServerProcess("engine", threads, os.path.join(sock_dir, f"engine{threads}.sock"), **ENGINE_CFG)
    except BaseException:
        base.close()
        raise
    try:
        svc = ping_pong(base.path, queries[:SERVICE_N])
        svc_eng = ping_pong(eng.path, queries[:SERVICE_N])
        cap_b = closed_loop(base.path, queries[:BASE_CAP_N])
        cap_e = closed_loop(eng.path, queries[:ENGINE_CAP_N])
        b_rows, e_rows = [], []
        for k, f in enumerate(LOADS):
            b_rows.append(point(base, queries, f, cap_b, seed=k))
            e_rows.append(point(eng, queries, f, cap_e, seed=k))
    finally:
        base.close()
        eng.close()
    for b, e in zip(b_rows, e_rows):
        e["throughput_vs_baseline"] = round(e["throughput_qps"] / b["throughput_qps"], 2)
        e["p99_vs_baseline"] = round(e["p99_ms"] / b["p99_ms"], 3)
        e["meets_target"] = bool(e["load_fraction"] < 1.0 and e["throughput_vs_baseline"] >= TARGET_RATIO
                                 and e["p99_ms"] <= b["p99_ms"])
    best = max((e for e in e_rows if e["meets_target"]), key=lambda e: e["throughput_qps"], default=None)
    return {"torch_threads": threads,
            "baseline": {"service_p50_ms": ms(svc, 50), "service_p99_ms": ms(svc, 99),
                         "capacity_qps": round(cap_b, 1), "points": b_rows},
            "engine": {"service_p50_ms": ms(svc_eng, 50), "service_p99_ms": ms(svc_eng, 99),
                       "capacity_qps": round(cap_e, 1), "points": e_rows},
            "capacity_ratio": round(cap_e / cap_b, 2), "best_point_meeting_target": best,
            "meets_target": best is not None}


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hlm_engine.io import atomic_path
    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs), 8), squeeze=False)
    for j, run in enumerate(runs):
        top, bot = axes[0, j], axes[1, j]
        for side, color in (("engine", "tab:blue"), ("baseline", "tab:gray")):
            rows = run[side]["points"]
            x = [100 * r["load_fraction"] for r in rows]
            label = "engine" if side == "engine" else "one at a time"
            top.plot(x, [r["p50_ms"] for r in rows], "o-", color=color, label=f"{label} p50")
            top.plot(x, [r["p99_ms"] for r in rows], "s--", color=color, label=f"{label} p99")
            bot.plot([r["throughput_qps"] for r in rows], [r["p99_ms"] for r in rows], "s--", color=color,
                     label=f"{label} p99")
        base_cap = run["baseline"]["capacity_qps"]
        bot.axvline(TARGET_RATIO * base_cap, color="tab:red", ls=":", label=f"{TARGET_RATIO:g}x one-at-a-time capacity")
        top.set(xlabel="offered load (% of the server's own capacity)", ylabel="latency (ms)", yscale="log",
                title=f"{run['torch_threads']} torch thread(s): latency vs offered load")
        bot.set(xlabel="achieved throughput (queries/s)", ylabel="p99 latency (ms)", yscale="log",
                title=f"{run['torch_threads']} torch thread(s): p99 vs throughput")
        top.legend(fontsize=8)
        bot.legend(fontsize=8)
    fig.suptitle(f"all-MiniLM-L6-v2 on CPU over a Unix socket, open-loop Poisson load; Engine("
                 f"{ENGINE_CFG['max_batch_tokens']} tokens, {ENGINE_CFG['max_batch_size']} req, "
                 f"{ENGINE_CFG['max_delay_us']} us)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run_all(queries):
    with tempfile.TemporaryDirectory(prefix="hlm-served-") as d:
        return [measure(t, queries, d) for t in THREADS]


def test_served_load(benchmark, bench_queries, machine_info, write_result):
    load_before = machine_info()["loadavg_1_5_15"]
    runs = benchmark.pedantic(run_all, args=(list(bench_queries),), rounds=1, iterations=1)
    best = [r["best_point_meeting_target"] for r in runs if r["meets_target"]]
    out = {"model": "all-MiniLM-L6-v2", "engine": ENGINE_CFG, "clients": CLIENTS, "seconds_per_point": POINT_S,
           "transport": "Unix socket, length-prefixed frames (hlm_engine.socket_server); server and load "
                        "generator in separate processes",
           "target": f">= {TARGET_RATIO:g}x baseline throughput at p99 <= baseline p99, at the same fraction "
                     f"of each server's capacity, below capacity",
           "runs": runs, "meets_target": bool(best),
           "machine": {**machine_info(), "loadavg_before_1_5_15": load_before}}
    path = write_result("served_load", out)
    png = os.path.join(os.path.dirname(path), "served_load.png")
    plot(runs, png)
    benchmark.extra_info.update({"meets_target": out["meets_target"]})
    for run in runs:
        b, e = run["baseline"], run["engine"]
        print(f"\n{run['torch_threads']} torch thread(s). one at a time: service p50 {b['service_p50_ms']:.1f} / "
              f"p99 {b['service_p99_ms']:.1f} ms, capacity {b['capacity_qps']:.0f} q/s; engine capacity "
              f"{e['capacity_qps']:.0f} q/s ({run['capacity_ratio']:.2f}x)")
        print(f"{'load':>5} | {'base q/s':>8} {'p50':>7} {'p99':>7} | {'eng q/s':>8} {'p50':>7} {'p99':>7} "
              f"{'batch':>6} | {'x thr':>6} {'p99 ok':>6}")
        for br, er in zip(b["points"], e["points"]):
            print(f"{br['load_fraction']:5.2f} | {br['throughput_qps']:8.0f} {br['p50_ms']:7.1f} {br['p99_ms']:7.1f} "
                  f"| {er['throughput_qps']:8.0f} {er['p50_ms']:7.1f} {er['p99_ms']:7.1f} {er['mean_batch_size']:6.1f} "
                  f"| {er['throughput_vs_baseline']:6.2f} {str(er['p99_ms'] <= br['p99_ms']):>6}")
    print(f"meets target: {out['meets_target']}  load average {load_before} -> {out['machine']['loadavg_1_5_15']}")
    print(f"-> {path}, {png}")
    if os.environ.get("HLM_BENCH_STRICT") and not out["meets_target"]:
        pytest.fail("target missed")
