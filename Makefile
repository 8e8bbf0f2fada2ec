# One command each to run, test, check and benchmark. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck imports bench sim load clean

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

# Many workstations against the server over real HTTP (not part of check: minutes):
#   make load [DB=pg|sqlite] [SECONDS=20] [WORKSTATIONS=50] [WORKERS=n]
# PostgreSQL at LOAD_PG_URL (default postgresql://postgres@127.0.0.1:5432), in a
# database of its own it drops and makes again (LOAD_PG_DATABASE, default load_bench).
DB ?= pg
SECONDS ?= 20
WORKSTATIONS ?= 50
load: $(STAMP)
	$(BIN)/python -m bench.load --db $(DB) --seconds $(SECONDS) --workstations $(WORKSTATIONS) \
		$(if $(WORKERS),--workers $(WORKERS))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
