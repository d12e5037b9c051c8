# The README's two commands: `make demo` and `make test`. Both build .venv on first use
# (or when pyproject.toml changes), so a fresh machine needs only Python 3.11, pip and make.
# `demo` installs the library alone; `test` and `lint` add the test tools (`.[test]`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
VENV_STAMP := $(VENV)/.venv-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
TEST_STAMP := $(VENV)/.test-stamp
PACKAGES := saga steps stores

.PHONY: demo test lint format bench clean

$(VENV_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $(VENV_STAMP)

$(DEMO_STAMP): pyproject.toml $(VENV_STAMP)
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO_STAMP)

# The test tools on top of the library: whatever the demo needs is then installed too.
$(TEST_STAMP): pyproject.toml $(VENV_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(DEMO_STAMP) $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/saga demo --workdir demo-work

lint: $(TEST_STAMP)
	$(BIN)/ruff check $(PACKAGES) bench tests examples
	$(BIN)/ruff format --check $(PACKAGES) bench tests examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

format: $(TEST_STAMP)
	$(BIN)/ruff format $(PACKAGES) bench tests examples
	$(BIN)/ruff check --fix $(PACKAGES) bench tests examples

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The table; BENCH_ARGS="--full" for the target sizes, "--json" for the figures.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-work build *.egg-info
