# Every target sets up what it needs: `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit e2e lint bench deps e2e-deps venv clean

deps:
	@./scripts/ensure-deps build

e2e-deps:
	@./scripts/ensure-deps e2e

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

e2e: $(STAMP) | e2e-deps
	$(PY) -m pytest -q -m e2e

test: lint unit e2e

bench: $(STAMP)
	$(PY) bench/boot.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Packages in dist/: the agent in its own venv under /opt, built with the system python3.
.PHONY: deb rpm
deb: | deps
	packaging/deb/build.sh

rpm: | e2e-deps
	packaging/rpm/build.sh
