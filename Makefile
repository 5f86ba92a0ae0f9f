# Two commands do all set-up on a fresh machine:  `make run`  and  `make test`.
# Each creates .venv with pip on first use (torch 2.14.1 / torchvision 0.29.1 come from the local disk).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.esper-installed

.PHONY: run test demo bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the main job on its small default: record, clone, PPO on the smoke world (offline, local, 9–13 min from a fresh clone)
	$(PY) experiments/ppo_multislot.py

test: $(STAMP)  ## the whole test suite
	$(PY) -m pytest

demo: $(STAMP)  ## one-minute walk of a seed through its lifecycle
	$(PY) experiments/demo_plane.py

bench: $(STAMP)
	$(PY) experiments/bench_dormant.py

clean-venv:
	rm -rf $(VENV)
