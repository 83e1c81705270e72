# The two commands a new user needs: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench conformance clean

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

test: lint
	$(BIN)/python -m pytest -q -rs tests

conformance: $(STAMP)
	@for f in foundation partitioner; do $(BIN)/python ../shared/conformance/$$f.py || exit 1; done

bench: $(STAMP)
	$(BIN)/python -m claygraph.cli.main bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
