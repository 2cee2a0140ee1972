"""The report's plots (matplotlib, Agg): study Pareto, recovery per phase, latency vs offered load, roofline
bounds. Each function takes the parsed results JSON and writes one PNG atomically, stamped in its footer with
the machine and versions that produced the numbers."""
from __future__ import annotations

from hlm_engine.io import atomic_path

AXIS_COLORS = {"objective": "tab:blue", "dimension": "tab:green", "scale": "tab:purple",
               "optimisation": "tab:orange", "optimization": "tab:orange"}
PHASE_MARKERS = {"align": "o", "prune": "^", "refine": "s", "build": "x"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str, stamp: str) -> str:
    fig.text(0.01, 0.005, stamp, fontsize=6.5, color="gray", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _plt().close(fig)
    return path


def _log_ticks(ax, lo: float, hi: float) -> None:
    # Plain-number ticks: the default log formatter prints overlapping "3x10^0"-style minor labels.
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ticks = [t for t in (0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000) if lo / 1.5 <= t <= hi * 1.5]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def study_pareto(study: dict, path: str, stamp: str) -> str:
    """Recall@100 recovery vs CPU batch-1 p50 latency, one point per cell (colour = axis), the teacher, and the
    Pareto front (no other point is both faster and better)."""
    plt = _plt()
    pts = [(c["speed"]["p50_ms"], c["recovery"]["R@100"], c["name"], c["axis"]) for c in study["cells"]]
    t = study["teacher"]
    pts.append((t["speed"]["p50_ms"], 1.0, f"teacher ({t['params'] / 1e6:.0f}M)", "teacher"))
    fig, ax = plt.subplots(figsize=(8, 5))
    front, best = [], -1.0
    for x, y, *_ in sorted(pts):
        if y > best:
            front.append((x, y))
            best = y
    for x, y, name, axis in pts:
        ax.scatter(x, y, s=36, marker="s" if axis == "teacher" else "o",
                   color="tab:red" if axis == "teacher" else AXIS_COLORS.get(axis, "tab:gray"), alpha=0.85)
        if (x, y) in front:  # names on the front only: the rest cluster; the table lists every cell
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", lw=0.8, ls="--",
            label="Pareto front")
    for axis, color in AXIS_COLORS.items():
        if any(p[3] == axis for p in pts):
            ax.scatter([], [], color=color, label=axis)
    ax.set_xscale("log")
    _log_ticks(ax, min(p[0] for p in pts), max(p[0] for p in pts))
    ax.set_xlabel(f"CPU batch-1 p50 latency, ms (log; {study['speed_settings']['threads']} thread)")
    ax.set_ylabel("Recall@100 / teacher's")
    ax.set_title("Design-choice study: quality vs latency (Home Depot dev)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, stamp)


def phase_recovery(study: dict, path: str, stamp: str) -> str:
    """Per cell, Recall@100 recovery after each phase of its chain (align -> prune steps -> refine)."""
    plt = _plt()
    cells = [c for c in study["cells"] if any("recovery" in p for p in c["phases"])]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(cells) + 1.4))
    for i, c in enumerate(cells):
        ph = [p for p in c["phases"] if "recovery" in p]
        xs = [p["recovery"]["R@100"] for p in ph]
        ax.plot(xs, [i] * len(xs), color="lightgray", lw=1.2, zorder=1)
        for p, x in zip(ph, xs):
            ax.scatter(x, i, marker=PHASE_MARKERS.get(p["phase"], "D"), s=30, zorder=2,
                       color=AXIS_COLORS.get(c["axis"], "tab:gray"))
    for phase, m in PHASE_MARKERS.items():
        if phase != "build":
            ax.scatter([], [], marker=m, color="black", label=phase + (" / direct fine-tune" if phase == "refine"
                                                                     else ""))
    ax.axvline(1.0, color="tab:red", lw=0.8, ls=":")
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels([c["name"] for c in cells], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Recall@100 / teacher's after each phase (dim cells: truncated student vs full teacher)")
    ax.set_title("Recovery per phase")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path, stamp)


def served_load(served: dict, path: str, stamp: str) -> str:
    """Per thread count: p50 / p99 latency vs offered load for the engine (and the one-at-a-time server when
    measured under the same load), and achieved vs offered throughput."""
    from hlm_engine.report.tables import served_runs
    plt = _plt()
    runs = served_runs(served)
    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.8 * len(runs)), squeeze=False)
    for (a1, a2), run in zip(axes, runs):
        sides = [("engine", run["engine"]["points"], "tab:blue")]
        if run["baseline"].get("points"):
            sides.append(("one at a time", run["baseline"]["points"], "tab:gray"))
        for label, rows, color in sides:
            x = [100 * r["load_fraction"] for r in rows]
            a1.plot(x, [r["p50_ms"] for r in rows], "o-", color=color, label=f"{label} p50")
            a1.plot(x, [r["p99_ms"] for r in rows], "s--", color=color, label=f"{label} p99")
            a2.plot(x, [r["offered_qps"] for r in rows], ":", color=color, label=f"{label} offered")
            a2.plot(x, [r["throughput_qps"] for r in rows], "o-", color=color, label=f"{label} achieved")
        a1.axhline(run["baseline"]["service_p99_ms"], color="black", lw=0.8, ls="-.", label="p99, no queueing")
        a1.set(xlabel="offered load (% of the server's capacity)", ylabel="latency (ms, log)", yscale="log",
               title=f"{run['threads']} torch thread(s): latency vs offered load")
        a2.set(xlabel="offered load (% of the server's capacity)", ylabel="queries/s",
               title=f"{run['threads']} torch thread(s): throughput")
        a1.legend(fontsize=7)
        a2.legend(fontsize=7)
    return _save(fig, path, stamp)


def roofline(roof: dict, path: str, stamp: str, length: int = 16) -> str:
    """Per model, the H100 and A100 latency bounds at batch 1 and 64 (`length` tokens), log scale, with the
    kernel-launch floor (no CUDA graphs) drawn as a tick: a bound, not a measurement."""
    plt = _plt()
    import numpy as np
    rows = [r for r in roof["rows"] if r["length"] == length]
    models = list(dict.fromkeys(r["model"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    gpus = [g for g in ("A100", "H100") if g in roof["gpus"]]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / (len(batches) * len(gpus))
    for bi, b in enumerate(batches):
        for gi, g in enumerate(gpus):
            k = bi * len(gpus) + gi
            ys = [next((r[g]["bound_us"] for r in rows if r["model"] == m and r["batch"] == b), np.nan)
                  for m in models]
            ax.bar(np.arange(len(models)) + (k - (len(batches) * len(gpus) - 1) / 2) * width, ys, width,
                   label=f"{g}, batch {b}", alpha=0.85)
    floors = [next((r["launch_floor_us"] for r in rows if r["model"] == m and r["batch"] == 1), np.nan) for m in models]
    ax.scatter(np.arange(len(models)), floors, marker="_", s=400, color="black", label="launch floor (no CUDA graphs)")
    ax.set_xticks(np.arange(len(models)))
    ax.set_xticklabels(models, fontsize=7, rotation=12)
    ax.set_yscale("log")
    ax.set_ylabel(f"µs per forward (bound), {length} tokens/text")
    ax.set_title("Roofline lower bounds on forward latency (bf16, datasheet peaks)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path, stamp)
