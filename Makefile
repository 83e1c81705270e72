# The two commands a new user needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-all lint bench conformance clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m claygraph.demo

lint: $(STAMP)
	$(BIN)/ruff check claygraph tests bench support

# the default suite (under 15 minutes on 2 cores); test-all adds the long tests (docs/testing.md). Workers:
# one per core, at most 4; the files that start Ray clusters run one after another on one worker
XDIST := --numprocesses=auto --maxprocesses=4 --dist=loadgroup

test: lint
	$(BIN)/python -m pytest -q -rs $(XDIST) -m "not long" tests

test-all: lint
	$(BIN)/python -m pytest -q -rs $(XDIST) tests

conformance: $(STAMP)
	@for f in foundation partitioner; do $(BIN)/python ../shared/conformance/$$f.py || exit 1; done

bench: $(STAMP)
	$(BIN)/python -m claygraph.cli.main bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
