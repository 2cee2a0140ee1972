"""`hlm report`: bench/results/*.json -> bench/results/REPORT.md with tables and PNG plots, and the README's
results section (rewritten between `<!-- report:begin -->` and `<!-- report:end -->`).

Every section reads one results file as its benchmark wrote it (a missing file becomes "not measured yet"
with the command that measures it), is stamped with the machine, thread count and versions that file
records (the time the run recorded, else the date git committed the file, else its mtime), and names the
command that regenerates it; a file's "note" (a person's reading of that run, e.g. ranges over several runs
and why a target is missed) is printed under its section, and a rerun of the benchmark drops it. Plots: the
study's quality-vs-latency Pareto and recovery per phase, latency vs offered load (served_load.json), roofline
bounds (roofline.json).
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from hlm_engine.report import plots
from hlm_engine.report import tables
from hlm_engine.io import atomic_path, read_json

BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"
DATA = "HLM_DATA_DIR=../shared/data "


@dataclass
class Section:
    key: str
    file: str
    title: str
    command: str
    body: Callable[[dict, "Context"], str]


@dataclass
class Context:
    results_dir: str
    target: str            # the Markdown file being written (image links are relative to it)
    level: int             # heading level of the sections (2 in REPORT.md, 3 in the README)
    draw: bool = True      # write the plots (once per `hlm report`: the README links the same files)

    def link(self, png: str) -> str:
        return os.path.relpath(png, os.path.dirname(os.path.abspath(self.target)))

    def image(self, name: str, alt: str) -> str:
        path = os.path.join(self.results_dir, name)
        return f"![{alt}]({self.link(path)})" if os.path.exists(path) else ""


def stamp(m: dict | None, threads=None, when: str | None = None) -> str:
    """One line: machine, cores, threads, torch, triton, commit, load, date (what the file recorded)."""
    m = m or {}
    parts = [f"{m.get('cpu', 'machine not recorded')}" + (f", {m['cores']} cores" if m.get("cores") else "")]
    th = threads if threads is not None else m.get("threads")
    if th is not None:
        parts.append(f"{th} torch thread(s)")
    parts.append(f"torch {m.get('torch', 'n/r')}")
    parts.append(f"triton {m.get('triton', 'n/r')}")
    parts.append(f"commit {m.get('commit', 'n/r')}")
    load = m.get("loadavg_1_5_15") or ([m["load_avg_1min"]] if "load_avg_1min" in m else None)
    if load:
        parts.append("load " + "/".join(str(x) for x in load))
    if m.get("time") or when:  # the time the run recorded, else when its file was written
        parts.append(str(m.get("time") or when))
    return "; ".join(parts)


def _shown(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _written(path: str) -> str:
    """When a results file was written: its last commit's date while git holds it unchanged (a checkout resets
    the file's mtime, not the day it was measured), else the file's mtime (a fresh run, or no git)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", name], cwd=folder, capture_output=True,
                               text=True, timeout=10)
        if dirty.returncode == 0 and not dirty.stdout.strip():
            date = subprocess.run(["git", "log", "-1", "--format=%cd", "--date=format:%Y-%m-%d %H:%M", "--", name],
                                  cwd=folder, capture_output=True, text=True, timeout=10).stdout.strip()
            if date:
                return date
    except (OSError, subprocess.SubprocessError):
        pass
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))


def _plot_stamp(m: dict | None, threads=None, when=None) -> str:
    return "measured on: " + stamp(m, threads, when)


# ------------------------------------------------------------------------------------------ section bodies
def _study(d: dict, ctx: Context) -> str:
    s = d["settings"]
    sp = d["speed_settings"]
    st = d.get("speed_stamp", {})
    if ctx.draw:
        plots.study_pareto(d, os.path.join(ctx.results_dir, "report_study_pareto.png"),
                           _plot_stamp(st, sp["threads"]))
        plots.phase_recovery(d, os.path.join(ctx.results_dir, "report_phase_recovery.png"), _plot_stamp(st))
    qwen = [c["name"] for c in d["cells"] if c["settings"].get("student") == "qwen3-random"]
    t = d["teacher"]
    def n(v):
        return "all" if v is None else f"{v:,}"
    out = [f"{t['products']:,} products, {int(t['metrics']['queries']):,} judged dev queries (exact top-100 over the "
           f"teacher's product vectors, relevant = grade ≥ {s['threshold']}), {n(s['log_queries'])} log queries for "
           f"alignment, {n(s['train_queries'])} train queries for refinement; training at "
           f"{s['train_threads'] or 'default'} torch thread(s). Speed: CPU fp32 at {sp['threads']} thread(s), every "
           f"model timed side by side in one process (batch-1 p50 over {sp['latency_queries']} dev queries, "
           f"batch-64 throughput over {sp['throughput_queries']}, {sp['rounds']} interleaved round(s)). Recovery = "
           f"student / teacher (full 768-d); *same dim* = against the teacher truncated alike. Train min / CPU-h: "
           f"the cell's phases (wall; process CPU time of all threads), shared phases counted in every cell using "
           f"them. The study varies one choice at a time at a short budget, off-the-shelf teacher and the "
           f"query log alone, on the whole catalogue: its absolute recoveries sit below the training table's, "
           f"which runs the full recipe (fine-tuned teacher, alignment on the log *and* the ad titles, "
           f"anchored refinement).", "", tables.study_table(d), "", tables.study_axes(d)]
    if qwen:
        out += ["", f"{', '.join(qwen)}: a Qwen3-architecture student built from our config system (random init, "
                    "the real 151,669-token Qwen3 tokenizer), aligned like any student. It starts from noise, so its "
                    "quality after this budget only shows that the path runs end to end (config → random init → "
                    "align → evaluate → time), not what a pretrained Qwen3 student reaches."]
    same = _same_trajectory(d["cells"], "l2", "cosine")
    if same:
        out += ["", f"{same[0]} and {same[1]} coincide: the student's output is L2-normalised before the loss, "
                    "so ‖s − t‖² = 2(1 − cos(s, t)), and Adam's update does not depend on the loss's scale — "
                    "the two objectives train the same model."]
    out += ["", ctx.image("report_study_pareto.png", "quality vs latency"),
            ctx.image("report_phase_recovery.png", "recovery per phase"),
            "", "Cost per phase (each distinct phase once; teacher encodes shared by every cell):", "",
            tables.study_costs(d)]
    return "\n".join(out)


def _same_trajectory(cells: list[dict], a: str, b: str) -> tuple[str, str] | None:
    """Names of an `a`-objective and a `b`-objective cell that differ only in the objective and reached the
    same numbers (to float rounding), if any."""
    def rest(c):
        return {k: v for k, v in c["settings"].items() if k not in ("name", "axis", "objective")}
    for x in cells:
        for y in cells:
            if (x["settings"]["objective"], y["settings"]["objective"]) == (a, b) and rest(x) == rest(y) and all(
                    abs(x["metrics"][k] - y["metrics"][k]) < 1e-3 for k in tables.METRICS):
                return x["name"], y["name"]
    return None


def _recipe(d: dict) -> str:
    st, z = d["settings"], d["sizes"]
    teacher = (f"the teacher fine-tuned first ({st['teacher_steps']} InfoNCE steps with mined hard negatives, top "
               f"layers only on CPU), then it encodes the ads" if st.get("teacher_steps") else
               "the off-the-shelf teacher encodes the ads")
    titles = "" if st.get("no_align_titles") else (
        f" plus the {z['products']:,} ad titles (their teacher vectors are the index input, so they cost no "
        f"teacher encoding; no labels are used)")
    lr = f" (peak lr {st['align_lr']:g})" if st.get("align_lr") else ""
    return (f"Recipe: {teacher}; the student is ℓ2-aligned for {st['align_steps']} steps{lr} on "
            f"{z['log_queries']:,} unlabeled log queries{titles}; then refined for {st['refine_steps']} steps "
            f"with InfoNCE against the frozen teacher product vectors plus an ℓ2 anchor to the teacher's query "
            f"vectors. The baseline gets the same refine budget from the raw student (fresh 384→768 head, no "
            f"alignment, no anchor).")


def _training(d: dict, ctx: Context) -> str:
    z, sv = d["sizes"], d["serving"]
    # Wall times with each phase's encodings and set-up when the run recorded them, else the training loops.
    walls = d.get("phase_wall_seconds") or {}
    secs = ", ".join(f"{k} {v / 60:.0f} min" for k, v in (walls if any(walls.values()) else
                                                         d.get("phase_seconds", {})).items() if v)
    return (f"The `make demo` pipeline (`--publish`): Home Depot dev, {z['dev_queries']} judged queries, exact "
            f"top-100 over the teacher's vectors of a {z['products']:,}-product slice (every dev-judged product, "
            f"every train positive, distractors); relevant = grade ≥ {d['settings']['threshold']}; recovery = "
            f"system / the teacher that built the index.\n\n" + _recipe(d) + "\n\n"
            + tables.demo_table(d["table"], d.get("order"))
            + f"\n\nServed through the engine and the ANN index ({sv['index_kind']}): "
            f"{sv['throughput_qps']:.0f} queries/s end to end, batch-1 p50 {sv['latency_ms_p50']:.1f} ms, "
            f"p99 {sv['latency_ms_p99']:.1f} ms (on the machine as loaded at publish time, see the stamp). "
            f"Training phase wall times ({'with their encodings' if any(walls.values()) else 'training loops'}"
            f", from the publishing run): {secs or 'n/r'}.")


def _encoder(d: dict, ctx: Context) -> str:
    r = next(iter(d["rows"].values()), {})
    q = r.get("queries")
    return (f"{d.get('model', 'minilm')}, the same {f'{q:,}' if isinstance(q, int) else '?'} real Home Depot queries "
            f"({r.get('mean_tokens_per_query', 0):.1f} tokens mean, {r.get('flops_per_query', 0) / 1e6:.0f} "
            f"MFLOP/query), fp32, interleaved rounds:\n\n" + tables.encoder_table(d))


def _cpu_gemm(d: dict, ctx: Context) -> str:
    return (f"MiniLM's 24 linears of one forward ({d.get('shapes', '')}), 42.5 MB of fp32 weights, at M token "
            "rows (a query is ~6-8); oneDNN's path hands rows above 64 to MKL, ours above 128 at 1 torch "
            "thread and above 16 at 2 (it runs on the calling thread; set from this table: at 32 rows one thread "
            "of ours no longer beats MKL's two). At batch 1 the GEMMs "
            "are memory-bound: read the weight GB/s against the DRAM stream.\n\n" + tables.cpu_gemm_table(d))


def _onnx_peer(d: dict, ctx: Context) -> str:
    peers = d.get("peers") or {}
    versions = ", ".join(f"{k} {v}" for k, v in sorted(peers.items())) or "peer versions n/r"
    rows = sorted(d["rows"].values(), key=lambda r: r["threads"])
    out = [f"{d.get('model', 'minilm')} on the Home Depot dev queries, tokenization included on both sides; ours is "
           "one C++ call per forward over weights packed once (fp32 | bf16 | int8 per output channel; int8 on "
           "integer multiply-adds over int16-quantised activations, so a query's int8 embedding is the same bits "
           f"alone or in a batch); the peers ({versions}) run in their own venv and process on one ONNX export, "
           "with length-sorted batches. \"GB/s at p50\" is the weight bytes one query streams over its p50, "
           "against the DRAM read stream at that thread count; \"GFLOP/s b64\" is the batch-64 rate in the linear "
           "layers' FLOPs, against the FMA roof of that many cores (bench/kernels/madd_rate.c; int8 runs on "
           "integer multiply-adds, so it can pass the fp32 roof): batch 1 is memory-bound, batch 64 compute-bound."]
    out += [tables.onnx_peer_table(r) for r in rows]
    if d.get("recall"):
        out.append("Recall@100 with compressed query encoders, every dev query over the whole catalogue indexed "
                   "in fp32 (`-k recall`; the reproduced students: `HLM_BENCH_STUDENTS=runs/reproduce/student,"
                   "runs/reproduce/student-pruned HLM_BENCH_CORPUS=runs/reproduce/corpus ... -k recall`):\n\n"
                   + tables.onnx_peer_recall(d["recall"]))
    return "\n\n".join(out)


def _scheduler(d: dict, ctx: Context) -> str:
    return tables.scheduler_table(d)


def _served(d: dict, ctx: Context) -> str:
    png = os.path.join(ctx.results_dir, "report_served_load.png")
    if ctx.draw:
        plots.served_load(d, png, _plot_stamp(d.get("machine"), "/".join(str(r["threads"]) for r in
                                                                          tables.served_runs(d))))
    return tables.served_table(d) + "\n\n" + ctx.image("report_served_load.png", "latency vs offered load")


def _index(d: dict, ctx: Context) -> str:
    return tables.index_table(d)


def _pruning(d: dict, ctx: Context) -> str:
    return tables.pruning_table(d) + "\n\n" + ctx.image("pruning_pareto.png", "pruning Pareto")


def _roofline(d: dict, ctx: Context) -> str:
    png = os.path.join(ctx.results_dir, "report_roofline.png")
    if ctx.draw:
        plots.roofline(d, png, "analytic bounds from datasheet peaks (bench/roofline.py), not measurements")
    return tables.roofline_table(d) + "\n\n" + ctx.image("report_roofline.png", "roofline bounds")


SECTIONS = [
    Section("study", "study.json", "Design-choice study", "make study  # hlm study --config bench/study/default.toml",
            _study),
    Section("training", "training.json", "Training: teacher → align → refine",
            DATA + "make demo DEMO_ARGS='--publish bench/results/training.json'",
            _training),
    Section("encoder", "encoder.json", "Encoder vs sentence-transformers",
            DATA + ".venv/bin/python -m pytest bench/test_encoder.py --benchmark-only -s", _encoder),
    Section("cpu_gemm", "cpu_gemm.json", "CPU GEMMs of query encoding (the batch-1 lever)",
            ".venv/bin/python -m pytest bench/test_cpu_gemm.py --benchmark-only -s", _cpu_gemm),
    Section("onnx_peer", "onnx_peer.json", "Online query latency vs ONNX Runtime / OpenVINO (native forward, "
            "compressed weights)", "bash bench/peers/setup_onnx.sh && " + DATA + ".venv/bin/python -m pytest "
            "bench/test_onnx_peer.py --benchmark-only -s", _onnx_peer),
    Section("scheduler", "scheduler_overhead.json", "Dynamic batching: scheduler overhead",
            ".venv/bin/python -m pytest bench/test_scheduler_overhead.py --benchmark-only -s", _scheduler),
    Section("served", "served_load.json", "Dynamic batching: served load",
            DATA + ".venv/bin/python -m pytest bench/test_served_load.py --benchmark-only -s", _served),
    Section("index", "index.json", "ANN index over teacher embeddings",
            DATA + "OMP_NUM_THREADS=1 .venv/bin/python -m pytest bench/test_index.py --benchmark-only -s", _index),
    Section("pruning", "pruning.json", "Structured pruning",
            DATA + ".venv/bin/python -m pytest -q bench/test_pruning.py -s", _pruning),
    Section("roofline", "roofline.json", "GPU roofline bounds (bounds, not measurements)",
            ".venv/bin/python bench/roofline.py", _roofline),
]


def _section_stamp(key: str, d: dict, path: str) -> str:
    if key == "study":
        return stamp(d.get("speed_stamp"))
    if key == "training":
        return stamp(d.get("machine"), None, _written(path))
    if key == "roofline":
        return f"analytic (no machine); written {_written(path)}"
    threads = {"encoder": "/".join(str(r.get("threads")) for r in d.get("rows", {}).values()),
               "onnx_peer": "/".join(str(r.get("threads")) for r in sorted(d.get("rows", {}).values(),
                                                                          key=lambda r: r.get("threads", 0)))
               if key == "onnx_peer" else None,
               "cpu_gemm": "/".join(str(r.get("threads")) for r in d.get("runs", {}).values())
               if key == "cpu_gemm" else None,
               "served": "/".join(str(r["threads"]) for r in tables.served_runs(d)) if key == "served" else None,
               "pruning": d.get("torch_threads"),
               "index": (d.get("machine") or {}).get("torch_threads")}.get(key)
    return stamp(d.get("machine"), threads, _written(path))


def render_sections(results_dir: str, ctx: Context) -> str:
    out = []
    h = "#" * ctx.level
    for sec in SECTIONS:
        path = os.path.join(results_dir, sec.file)
        out.append(f"{h} {sec.title}")
        if not os.path.exists(path):
            out.append(f"Not measured yet (command: `{sec.command}`).\n")
            continue
        d = read_json(path)
        command = d.get("command") if isinstance(d.get("command"), str) else sec.command
        try:
            body = f"`{command}`  \n_Measured on: {_section_stamp(sec.key, d, path)}._\n\n" + sec.body(d, ctx).strip()
            if isinstance(d.get("note"), str):  # a person's reading of this run, kept in its file (a rerun drops it)
                body += "\n\n" + d["note"].strip()
        except (KeyError, TypeError, IndexError) as e:  # one stale or reshaped file must not sink the report
            body = (f"`{sec.file}` has a layout this report does not know ({type(e).__name__}: {e}); rerun "
                    f"`{command}`.")
        out.append(body + "\n")
    return "\n".join(out)


def render_report(results_dir: str, out: str) -> str:
    from hlm_engine.report.machine import machine_stamp
    from hlm_engine.report.gpu import reproduce_section
    ctx = Context(results_dir, out, 2)
    now = machine_stamp()
    head = ["# hlm-engine: reproduction report", "",
            f"Generated by `hlm report` from `{_shown(results_dir)}/*.json`. Report written on: "
            f"{stamp(now)}. Each section below is stamped with the machine and threads its own run recorded "
            "(n/r: not recorded by that benchmark) and names the command that regenerates it.", ""]
    return "\n".join(head) + "\n" + render_sections(results_dir, ctx) + "\n" + reproduce_section(2) + "\n"


def render_readme_block(results_dir: str, readme: str, report: str) -> str:
    ctx = Context(results_dir, readme, 3, draw=False)
    intro = (f"Generated by `hlm report --readme` from `bench/results/*.json` (full report with stamps, plots and the "
             f"GPU reproduction guide: [{os.path.basename(report)}]({ctx.link(report)})). Speed is always a ratio "
             f"against a peer measured in the same run.\n\n")
    return intro + render_sections(results_dir, ctx)


def replace_between_markers(text: str, block: str, where: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{where}: needs exactly one {BEGIN} followed by one {END} around the generated section")
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:a] + "\n" + block.strip() + "\n" + text[b:]


def _write(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_report(results_dir: str, out: str | None = None, readme: str | None = None) -> list[str]:
    """Write REPORT.md (default: results_dir/REPORT.md) with its plots, and optionally the README block.
    Returns the paths written."""
    if not os.path.isdir(results_dir):
        raise FileNotFoundError(f"results folder {results_dir!r} does not exist")
    out = out or os.path.join(results_dir, "REPORT.md")
    _write(out, render_report(results_dir, out))
    written = [out] + sorted(os.path.join(results_dir, f) for f in os.listdir(results_dir)
                             if f.startswith("report_") and f.endswith(".png"))
    if readme:
        if not os.path.exists(readme):
            raise FileNotFoundError(f"README {readme!r}: no such file")
        with open(readme) as f:
            text = f.read()
        _write(readme, replace_between_markers(text, render_readme_block(results_dir, readme, out), readme))
        written.append(readme)
    return written
