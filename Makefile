# Set-up and everyday commands. Needs only Python 3.11+ and make.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo serve test lint typecheck bench fuzz clean browser-deps browser-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cli,postgres,dashboard]'
	touch $(STAMP)

## Run the demo swarm on its own file, ./swarm.db (replaced each run only if the demo made it;
## $$SWARM_DB_URL is not used here, so it can never point the demo at another database).
demo: setup
	$(BIN)/swarmdb demo --fresh --db swarm.db

## The dashboard of the demo's database on http://127.0.0.1:8700/ (read-only; Ctrl-C stops).
serve: setup
	$(BIN)/swarmdb serve --db swarm.db

## The whole test suite: lint, types, then every test (PostgreSQL found or started by the tests,
## the browser tests in Debian's chromium under Pyodide).
test: setup browser-deps
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

## Long randomized runs: differential programs (every backend against memory, FUZZ_SECONDS
## on each backend, default 600), FUZZ_HOSTILE_EXAMPLES rounds of hostile arguments to every
## method, and I/O faults injected under SQLite at FUZZ_FAULT_POINTS points per kind. A failure
## prints the program and the blob that replays it (@reproduce_failure).
FUZZ_SECONDS ?= 600
FUZZ_HOSTILE_EXAMPLES ?= 300
FUZZ_FAULT_POINTS ?= 60
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) HOSTILE_EXAMPLES=$(FUZZ_HOSTILE_EXAMPLES) \
	VFS_FAULT_POINTS=$(FUZZ_FAULT_POINTS) $(BIN)/python -m pytest \
	    tests/conformance/test_differential.py tests/conformance/test_hostile.py \
	    tests/browser/emulated/test_differential.py tests/browser/emulated/test_hostile.py \
	    tests/backends/sqlite/test_vfs_faults.py -p no:randomly -p no:cacheprovider -s -q --timeout=0

## What the browser tests and demo need: Debian's chromium (installed only if missing; never a
## browser downloaded by Playwright) and Pyodide's files from the npm registry, checksum pinned,
## cached in .browser_cache/. Without root or sudo the browser tests skip, except with CI=true.
browser-deps: setup
	@if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then \
	    sudo=""; if [ "$$(id -u)" -ne 0 ]; then sudo="sudo"; fi; \
	    echo "installing Debian's chromium"; \
	    { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	      $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || [ "$$CI" != true ]; \
	fi
	$(BIN)/python -m tests.browser.harness fetch || [ "$$CI" != true ]

PYODIDE_VERSION := $(shell sed -n 's/^PYODIDE_VERSION = "\(.*\)"/\1/p' tests/browser/harness.py)

## The browser demo (examples/browser/): a swarm in IndexedDB, served on http://127.0.0.1:8000/.
browser-demo: browser-deps
	$(BIN)/python examples/browser/serve.py --pyodide .browser_cache/pyodide-$(PYODIDE_VERSION)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .browser_cache
