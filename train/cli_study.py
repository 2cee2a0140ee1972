"""`hlm study`: the design-choice study — train, cache and tabulate a grid of cells (see
`hlm_engine.train.study`), then time every model side by side. A rerun computes only what changed.

    hlm study --config bench/study/default.toml                     # the full study (writes study.json)
    hlm study --config bench/study/default.toml --set align_steps=20 --set refine_steps=10 --out /tmp/s.json
    hlm study --config bench/study/default.toml --list              # the cells and which are cached
"""
from __future__ import annotations

import argparse
import os
import shlex


def register(sub):
    p = sub.add_parser("study", help="the design-choice study: train/cache/tabulate a grid of cells",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench/study/default.toml", help="study TOML (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [study] setting, or a cell setting in every cell (repeatable)")
    p.add_argument("--work-dir", default="~/.cache/hlm/study",
                   help="caches: teacher vectors, phase models, evaluations, cell results (default: %(default)s)")
    p.add_argument("--out", default="bench/results/study.json", help="results JSON (default: %(default)s)")
    p.add_argument("--remeasure", action="store_true", help="time the models again even if cached")
    p.add_argument("--list", action="store_true", help="list the cells and whether each is cached; compute nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(a):
    from hlm_engine.io import write_json
    from hlm_engine.report.tables import study_table
    from hlm_engine.train.study import Study
    from hlm_engine.train.study_config import load_config
    cfg = load_config(a.config, a.overrides)
    study = Study(cfg, a.work_dir, progress=not a.no_progress, remeasure=a.remeasure)
    if a.list:
        for c in cfg.cells:
            state = "cached" if os.path.exists(study.cell_path(c)) else "to compute"
            print(f"{c.name:<40} {c.axis:<14} {state}")
        return 0
    results = study.run()
    results["command"] = f"hlm study --config {shlex.quote(a.config)}" + "".join(
        f" --set {shlex.quote(o)}" for o in a.overrides)
    write_json(a.out, results)
    print(study_table(results))
    s = results["speed_settings"]
    print(f"\nrecovery = student / teacher Recall@100 (same dim: teacher truncated alike); speed: CPU, "
          f"{s['threads']} torch thread(s), batch-1 p50 over {s['latency_queries']} dev queries, batch-64 over "
          f"{s['throughput_queries']}; train = wall minutes and CPU-hours of the cell's phases")
    done = results["computed_this_run"]
    print(f"computed this run: {len(done)} item(s)" + (f" ({', '.join(done[:8])}{', ...' if len(done) > 8 else ''})"
                                                       if done else " — everything was cached"))
    print(f"wrote {a.out}")
    return 0
