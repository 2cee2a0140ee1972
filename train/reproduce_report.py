"""`hlm reproduce`'s measurements and outputs: dev quality per system (cached), the table, the phase times,
the alignment curve, bench/results/reproduction.json and the Markdown table beside it."""
from __future__ import annotations

import json
import os

from hlm_engine.io import atomic_path, write_json
from hlm_engine.retrieval.corpus import load_embeddings
from hlm_engine.retrieval.eval import format_table, recovery

from .common import load_encoder
from .embed import retrieval_quality

COLS = ("R@10", "R@100", "nDCG@10")
GRADE3 = 3.0  # Home Depot grades are means of 1-3: grade 3 = every rater said "exact match"


class Quality:
    """Dev metrics of query encoders against corpus vectors, at the threshold and at grade 3, cached in a
    JSON file by (producing folder, documents folder): a retrained model lives in a new folder."""

    def __init__(self, path: str, dev, threshold: float):
        self.path, self.dev, self.threshold = path, dev, threshold
        self.known = json.load(open(path)) if os.path.exists(path) else {}
        self._docs: dict[str, object] = {}

    def row(self, key: str, model: str, docs_dir: str) -> dict:
        k = f"{key}|{os.path.abspath(docs_dir)}|{self.threshold}|{len(self.dev.queries)}"
        if k not in self.known:
            if docs_dir not in self._docs:
                ids, vecs = load_embeddings(docs_dir)
                if list(ids) != list(self.dev.doc_ids):
                    raise ValueError(f"{docs_dir}: its products differ from the evaluation corpus")
                self._docs = {docs_dir: vecs}  # one 54k x 768 matrix in memory at a time
            q = load_encoder(model, None, "model").encode(self.dev.queries, batch_size=128)
            d = self._docs[docs_dir]
            self.known[k] = {"model": model, "docs": docs_dir,
                             "main": retrieval_quality(q, d, self.dev.query_ids, self.dev.doc_ids, self.dev.qrels,
                                                       self.threshold),
                             "grade3": retrieval_quality(q, d, self.dev.query_ids, self.dev.doc_ids, self.dev.qrels,
                                                         GRADE3)}
            write_json(self.path, self.known)
        return self.known[k]


# Table order (by name prefix): teachers, the off-the-shelf student, the recipe's students, the baseline last.
ORDER = ("teacher (off", "teacher (fine", "student off", "student aligned", "student aligned +", "student pruned",
         "baseline")


def _ordered(rows: dict) -> dict:
    rank = lambda n: max((k for k, p in enumerate(ORDER) if n.startswith(p)), default=len(ORDER))  # noqa: E731
    return {n: rows[n] for n in sorted(rows, key=rank)}


def tables(rows: dict) -> dict[str, dict]:
    """{relevance: {system: R@10, R@100, nDCG@10 and their recovery against the fine-tuned teacher}}."""
    rows = _ordered(rows)
    ref = next((n for n in rows if n.startswith("teacher (fine-tuned")), "teacher (off the shelf)")
    out = {}
    for rel in ("main", "grade3"):
        t = rows[ref][rel]
        out[rel] = {name: {c: m[rel][c] for c in COLS}
                    | {f"rec {c}": recovery(m[rel], t)[c] for c in COLS} for name, m in rows.items()}
    return out


def verdicts(table: dict) -> dict[str, bool]:
    """The issue's targets, checked on the main relevance (those whose rows exist so far)."""
    t = table["main"]
    find = lambda p: next((v for n, v in t.items() if n.startswith(p)), None)  # noqa: E731
    s, sym, base, pr = (find("student aligned + refined"), find("student off the shelf"),
                        find("baseline"), find("student pruned"))
    out = {}
    if s is not None:
        out["refined >= 98% teacher R@100"] = s["rec R@100"] >= 0.98
        out["refined >= 95% teacher R@10"] = s["rec R@10"] >= 0.95
        if sym is not None:
            out["refined > off-the-shelf symmetric (R@10, R@100, nDCG@10)"] = all(s[c] > sym[c] for c in COLS)
    if pr is not None:
        out["pruned >= 95% teacher R@100"] = pr["rec R@100"] >= 0.95
        if sym is not None:
            out["pruned > off-the-shelf symmetric (R@10, R@100, nDCG@10)"] = all(pr[c] > sym[c] for c in COLS)
    if base is not None and s is not None:
        out["refined > direct asymmetric baseline (R@10, R@100, nDCG@10)"] = all(s[c] > base[c] for c in COLS)
    return out


def time_table(phases: dict, seconds: float) -> str:
    lines = ["", "phase times (wall; cached = measured by the run that computed it):",
             "| phase | wall min | this run |", "|---|---:|---|"]
    for name, p in phases.items():
        lines.append(f"| {name} | {p['wall_seconds'] / 60:.1f} | {'cached' if p['cached'] else 'ran'} |")
    total = sum(p["wall_seconds"] for p in phases.values())
    lines.append(f"| **all phases** | **{total / 60:.1f}** | this process: {seconds / 60:.1f} min |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    main, g3 = result["table"]["main"], result["table"]["grade3"]
    s = result["sizes"]
    head = (f"Home Depot dev, {s['dev_queries']:,} queries, exact top-100 over the fine-tuned teacher's vectors of "
            f"all {s['products']:,} products; relevant = grade >= {result['settings']['threshold']} "
            f"(grade 3 alongside); recovery = system / fine-tuned teacher.\n\n")
    lines = ["| system | R@10 | R@100 | nDCG@10 | rec. R@10 | rec. R@100 | rec. nDCG@10 | R@100 (grade 3) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in main.items():
        lines.append(f"| {name} | {m['R@10']:.3f} | {m['R@100']:.3f} | {m['nDCG@10']:.3f} | {m['rec R@10']:.3f} | "
                     f"{m['rec R@100']:.3f} | {m['rec nDCG@10']:.3f} | {g3[name]['R@100']:.3f} |")
    curve = result.get("align_curve") or []
    tail = ""
    if curve:
        tail = "\n\nAlignment curve (dev, every product): " + ", ".join(
            f"step {c['step']}: R@10 {c['main']['R@10']:.3f} / R@100 {c['main']['R@100']:.3f}" for c in curve) + "."
    times = "\n\nPhase wall minutes: " + ", ".join(f"{k} {v['wall_seconds'] / 60:.1f}"
                                                   for k, v in result["phases"].items()) + "."
    note = "" if result["complete"] else "\n\n_Partial: the run had not finished every phase when this was written._"
    return head + "\n".join(lines) + tail + times + note + "\n"


def publish(a, root: str, rows: dict, phases: dict, logs: dict, seconds: float, sizes: dict,
            complete: bool) -> dict:
    """Print the tables and write results.json (and --publish's JSON + .md); called after every phase, with
    complete=False until the last."""
    table = tables(rows)
    alog, plog = logs.get("align") or {}, logs.get("prune") or {}
    result = {"complete": complete, "table": table, "order": list(table["main"]), "rows": _ordered(rows),
              "targets": verdicts(table), "sizes": sizes, "phases": phases,
              "total_wall_seconds": round(sum(p["wall_seconds"] for p in phases.values()), 1),
              "seconds_this_run": round(seconds, 1), "align_curve": alog.get("curve", []),
              "prune_steps": [{k: e.get(k) for k in ("step", "target", "num_layers", "widths", "params", "distance")}
                              for e in plog.get("steps", [])],
              "settings": {k: v for k, v in vars(a).items() if k not in ("work_dir", "data_dir", "publish", "func")
                           and not k.startswith("_")}}
    print()
    print(f"{sizes['dev_queries']} dev queries, {sizes['products']} products, relevant = grade >= {a.threshold}; "
          f"rec = system / fine-tuned teacher{'' if complete else ' (so far: more phases to run)'}")
    print(format_table(table["main"]))
    print("\nrelevant = grade 3:")
    print(format_table(table["grade3"]))
    for name, ok in result["targets"].items():
        print(f"  target {'met' if ok else 'MISSED'}: {name}")
    write_json(os.path.join(root, "results.json"), result)
    if a.publish:
        from hlm_engine.report.machine import machine_stamp
        write_json(a.publish, result | {"machine": machine_stamp()})
        md = os.path.splitext(a.publish)[0] + ".md"
        with atomic_path(md) as tmp, open(tmp, "w") as f:
            f.write(markdown(result))
        print(f"[reproduce] published to {a.publish} and {md}", flush=True)
    return result
