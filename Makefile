# Quickstart: `make demo` runs the demo, `make test` runs lint and the whole suite.
# `make bench` runs the benchmark suite (docs/performance.md; BENCH_ARGS='--size small' for a quick one).
# Each creates .venv and installs sched into it on first use.

# python3.11 if it is there, else python3 (it must be 3.11 or newer; checked below)
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint soak bench screenshot clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "make: $(PYTHON) is missing or older than 3.11 (set PYTHON=...)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

# the reliability suite at full length: 500 crash kills, a one-minute soak over 10,000 tasks
soak: $(STAMP)
	SCHED_SOAK=1 $(BIN)/python -m pytest -q -s tests/reliability

# one JSON document on stdout (also kept in bench.json), the readable table on stderr
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --json-out bench.json $(BENCH_ARGS)

# docs/dashboard.png, the README's picture of the dashboard, made by the browser the browser tests use
screenshot: $(STAMP)
	$(BIN)/python -m tests.browser.screenshot docs/dashboard.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
