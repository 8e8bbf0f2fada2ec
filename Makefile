# One command each to run, test, check and benchmark. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck imports bench sim clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/workstation demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

check: lint typecheck imports test

bench: $(STAMP)
	$(BIN)/python -m bench

# The deterministic simulation: `make sim` (10,000 seeds), `make sim SEEDS=500`,
# `make sim SEED=42` replays one seed and prints its story.
SEEDS ?= 10000
sim: $(STAMP)
ifdef SEED
	$(BIN)/python -m sim --seed $(SEED) --trace
else
	$(BIN)/python -m sim --seeds $(SEEDS)
endif

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
