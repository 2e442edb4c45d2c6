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
	$(BIN)/tlx demo   # a new run folder each time: artifacts/demo-<UTC time>

# pytest's exit 5 ("no tests collected") counts as a failure, not a pass.
test: install
	$(BIN)/python -m pytest -q --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-all: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-cpu: install
	bash benchmarks/cpu_suite.sh

clean:
	rm -rf artifacts/demo-* .pytest_cache
