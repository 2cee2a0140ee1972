# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates/updates .venv idempotently and installs the default models (cached once).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hlm-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo quicklook test venv models bench study reproduce report clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or: make PYTHON=python3)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	@touch $(STAMP)

models: $(STAMP)
	$(VENV)/bin/hlm models install

# The whole pipeline: teacher encodes the ads -> index -> align (+refine) the student -> serve the dev
# queries through the engine -> quality and latency tables. Cached under runs/demo; DEMO_ARGS=--full for all data.
demo: models
	$(PY) -m hlm_engine.train.demo $(DEMO_ARGS)

# The whole recipe on the whole catalogue (teacher fine-tune, every product encoded, align, refine, prune to
# 2 layers, the direct baseline), evaluated on every dev query over every product: 78 min on 2 idle cores.
# Resumable and cached under runs/reproduce (fixed places: teacher/ corpus/ index/ student/ student-pruned/).
# Writes bench/results/reproduction.json and reproduction.md.
reproduce: models
	@test -n "$$HLM_DATA_DIR" || { echo "make reproduce needs HLM_DATA_DIR (the folder holding homedepot/ and queries/)"; exit 1; }
	$(VENV)/bin/hlm reproduce --publish bench/results/reproduction.json $(REPRODUCE_ARGS)

# A two-minute look: encode ads and queries with both default models, timings and nearest neighbours.
quicklook: models
	$(PY) -m hlm_engine.quicklook $(DEMO_ARGS)

test: models
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

bench: models
	$(PY) -m pytest bench --benchmark-only -q -s $(BENCH_ARGS)

# The design-choice study (bench/study/default.toml: objectives, dimensions, pruned / Qwen3 students, optimisation;
# ~40-60 min on 2 cores) on the real data; every phase is cached under ~/.cache/hlm/study, so a rerun only
# re-tabulates. Writes bench/results/study.json. STUDY_ARGS="--set align_steps=20 ..." shrinks the budget.
study: models
	@test -n "$$HLM_DATA_DIR" || { echo "make study needs HLM_DATA_DIR (the folder holding homedepot/ and queries/)"; exit 1; }
	$(VENV)/bin/hlm study --config bench/study/default.toml $(STUDY_ARGS)

# bench/results/REPORT.md (tables, plots, machine stamps, GPU reproduction guide) from bench/results/*.json,
# and the README's results section between its report markers.
report: venv
	$(VENV)/bin/hlm report --readme README.md

clean-venv:
	rm -rf $(VENV)
