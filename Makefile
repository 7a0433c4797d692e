# transferscope: `make run` runs the default workflow, `make test` the test suite.
# Both create .venv and install the project first (pinned torch: see pyproject.toml).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run smoke test test-fast lint format bench clean

# torch-cka is the CKA tests' independent reference; --no-deps: its metadata pulls an unpinned torch
$(BIN)/transferscope: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'torch-cka==0.21'
	touch $@

setup: $(BIN)/transferscope

run: setup  ## the whole default workflow, then its HTML report
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html

smoke: setup  ## the tiny workflow the tests use
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/python tests/snakemake_lint.py config/smoke.yaml

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/snakefmt Snakefile rules

# two workers, one test file each at a time: a file's module fixtures (a DVC workspace, a trained
# run) are built once, and single-threaded tests no longer leave the second core idle
test: lint  ## lint, then every test (slow ones included)
	$(BIN)/python -m pytest -q --durations=15 -n 2 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/interactions.py
	$(BIN)/python benchmarks/cka.py

clean:
	rm -rf .snakemake logs
