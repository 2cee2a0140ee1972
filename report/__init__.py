"""Reporting (installed as `hlm_engine.report`; not part of the runtime, which never imports it): REPORT.md,
plots (matplotlib, the `report` extra) and the README's results section from bench/results/*.json, machine
stamps for benchmarks, the GPU reproduction guide. `hlm report` registers from here (`cli.py`)."""
