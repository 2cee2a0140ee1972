"""`hlm report`: bench/results/*.json -> bench/results/REPORT.md (tables, PNG plots, machine stamps, the GPU
reproduction guide) and, with --readme, the README's results section between its report markers.

    hlm report                                  # bench/results/REPORT.md
    hlm report --readme README.md               # ... and regenerate the README's results section
"""
from __future__ import annotations

import argparse


def register(sub):
    p = sub.add_parser("report", help="write bench/results/REPORT.md (+ plots) and the README results section",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default="bench/results", help="folder of results JSONs (default: %(default)s)")
    p.add_argument("--out", default=None, help="report path (default: RESULTS_DIR/REPORT.md)")
    p.add_argument("--readme", default=None, help="also rewrite this README between <!-- report:begin/end -->")
    p.set_defaults(func=run)


def run(a):
    from hlm_engine.report.report import write_report
    for path in write_report(a.results_dir, a.out, a.readme):
        print(f"wrote {path}")
    return 0
