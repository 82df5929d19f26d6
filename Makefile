# Every target sets up what it needs: `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit e2e lint bench deps venv clean

deps:
	@./scripts/ensure-deps

$(STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/agent demo

unit: $(STAMP)
	$(PY) -m pytest -q -m 'not e2e'

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tests bench scripts
	$(VENV)/bin/mypy

e2e: $(STAMP)
	$(PY) -m pytest -q -m e2e

test: lint unit e2e

bench: $(STAMP)
	$(PY) bench/boot.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
