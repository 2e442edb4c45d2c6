# Quick start: `make demo` runs the whole pipeline offline; `make test` runs the tests.
# Each target sets itself up on a fresh machine (venv + install) before it runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test test-all lint bench-cpu clean

$(BIN)/tlx: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e ".[dev]"
	touch $(BIN)/tlx

install: $(BIN)/tlx

demo: install
	$(BIN)/tlx demo --out artifacts/demo

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-cpu: install
	bash benchmarks/cpu_suite.sh

clean:
	rm -rf artifacts/demo .pytest_cache
