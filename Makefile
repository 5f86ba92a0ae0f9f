# Two commands do all set-up on a fresh machine:  `make run`  and  `make test`.
# Each creates .venv with pip on first use (torch 2.14.1 / torchvision 0.29.1 come from the local disk).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.esper-installed

.PHONY: run test test-all demo bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the main job on its small default: record, clone, PPO on the smoke world (offline, local, ~8.5 min)
	$(PY) experiments/ppo_multislot.py

test: $(STAMP)  ## the default test suite (slow tests excluded)
	$(PY) -m pytest

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -m ''

demo: $(STAMP)  ## one-minute walk of a seed through its lifecycle
	$(PY) experiments/demo_plane.py

bench: $(STAMP)
	$(PY) experiments/bench_dormant.py

clean-venv:
	rm -rf $(VENV)
