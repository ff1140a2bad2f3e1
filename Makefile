# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
RUN    ?= runs/moons

.PHONY: demo test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## The book's RealNVP on two moons: trains, prints the test NLL, writes $(RUN)/plots/*.png
demo: $(VENV)/.installed
	$(BIN)/flowforge train --data moons --out $(RUN) --force --seed 0

## The default test suite (slow tests excluded: `make test-all` runs them too)
test: $(VENV)/.installed
	$(BIN)/python -m pytest

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -m ''

## flowforge against nflows, zuko and normflows; writes docs/benchmarks.md (about 15 minutes)
bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
