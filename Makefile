# Set-up and everyday commands. Needs only Python 3.11+ and make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cli,postgres]'
	touch $(STAMP)

## Run the demo swarm on its own file, ./swarm.db (replaced each run only if the demo made it;
## $$SWARM_DB_URL is not used here, so it can never point the demo at another database).
demo: setup
	$(BIN)/swarmdb demo --fresh --db swarm.db

## The whole test suite: lint, types, then every test (PostgreSQL found or started by the tests).
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
