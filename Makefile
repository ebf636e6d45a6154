# Every target that needs Python creates the virtual environment first, so a fresh clone needs
# only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install demo run models status test lint bench bench-sync bench-history bench-speed bench-day clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create .venv and install the project with its dev tools

demo: $(STAMP)  ## emulated portal -> local DuckDB file, what was loaded, the fleet report
	$(PY) -m tests.demo

run: $(STAMP)  ## the real job: the portal in .dlt/ or the environment -> the configured destination
	$(PY) -m pipelines.cli run $(ARGS)

models: $(STAMP)  ## (re)build the sql/ models on the configured destination
	$(PY) -m pipelines.cli models

status: $(STAMP)  ## last runs and data freshness (non-zero exit when stale)
	$(PY) -m pipelines.cli status $(ARGS)

test: $(STAMP)  ## the whole test suite (two workers)
	$(PY) -m pytest -q -n 2

lint: $(STAMP)  ## ruff check, format check and mypy
	$(PY) -m ruff check pipelines tests bench
	$(PY) -m ruff format --check pipelines tests bench
	$(PY) -m mypy

bench: bench-sync bench-history bench-speed bench-day  ## the benchmarks below (about 50 minutes)

bench-sync: $(STAMP)  ## sync scenarios against the emulator; writes bench/RESULTS.md
	$(PY) -m bench.sync $(ARGS)

bench-history: $(STAMP)  ## a year of history (70 M readings): cycle vs one day; bench/HISTORY.md
	$(PY) -m bench.history --write-results bench/HISTORY.md $(ARGS)

bench-speed: $(STAMP)  ## the job vs dlt's rest_api peer, sequential and tuned (2,000 pumps, 20 ms)
	$(PY) -m bench.speed $(ARGS)

bench-day: $(STAMP)  ## 96 scheduled runs after a full sync: requests per run, oldest details
	$(PY) -m bench.day $(ARGS)

clean:  ## remove the virtual environment and local demo/test output
	rm -rf $(VENV) var .pytest_cache .ruff_cache
