# The README's two commands: `make demo` and `make test`. Both build .venv on first use
# (or when pyproject.toml changes), so a fresh machine needs only Python 3.11, pip and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PACKAGES := saga steps stores

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/saga demo --workdir demo-work

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) bench tests examples
	$(BIN)/ruff format --check $(PACKAGES) bench tests examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format $(PACKAGES) bench tests examples
	$(BIN)/ruff check --fix $(PACKAGES) bench tests examples

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The table; BENCH_ARGS="--full" for the target sizes, "--json" for the figures.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-work build *.egg-info
