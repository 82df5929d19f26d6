# Every target sets up what it needs: `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
# The Debian release a package is built for and booted on: this machine's own by default;
# `make deb DIST=trixie` builds Debian 13's package inside a Debian 13 root.
HOST_DIST := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)
DIST ?= $(HOST_DIST)
# The releases `make test` builds, installs and boots (docs/install.md).
RELEASES := bookworm trixie
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration unit-user unit-trixie e2e $(RELEASES:%=e2e-%) programs \
	fleet lint bench deps e2e-deps programs-deps venv clean

# The suites by marker (pyproject.toml): unit tests are pure logic, hermetic and fast;
# integration tests start the simulated cloud, servers or agent processes.
SUITES := not e2e and not programs and not fleet
UNIT := $(SUITES) and not integration
INTEGRATION := $(SUITES) and integration

deps:
	@./scripts/ensure-deps build

e2e-deps:
	@./scripts/ensure-deps e2e

programs-deps:
	@./scripts/ensure-deps programs

$(STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The unit and integration tests once more as an unprivileged user (uid 65534), in a venv of
# Debian's own python3 (readable by that user): only what needs mounts or namespaces may skip.
USER_VENV := .venv-user
USER_STAMP := $(USER_VENV)/.installed
$(USER_STAMP): pyproject.toml | deps
	/usr/bin/python3 -m venv $(USER_VENV)
	$(USER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(USER_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(USER_STAMP)

unit-user: $(USER_STAMP)
	@if [ "$$(id -u)" = 0 ]; then as=(setpriv --reuid=65534 --regid=65534 --clear-groups); \
	else as=(); fi; \
	"$${as[@]}" env HOME=/tmp PYTHONDONTWRITEBYTECODE=1 $(USER_VENV)/bin/python -m pytest -q \
	  -m '$(SUITES)' -p no:cacheprovider --basetemp=/tmp/agent-unit-user-$$(id -u)

demo: $(STAMP)
	$(VENV)/bin/agent demo

# Pure logic: under a minute on two cores.
unit: $(STAMP)
	$(PY) -m pytest -q -m '$(UNIT)'

# Against the simulated cloud (IMDS + moto), real servers and agent processes (minutes).
integration: $(STAMP)
	$(PY) -m pytest -q -m '$(INTEGRATION)'

# The unit tests under Debian 13's Python 3.13, inside a Debian 13 root (scripts/debian-root:
# debootstrapped once into .cache/roots/trixie) with its own venv, .venv-trixie; what 3.13
# deprecates fails the run.
unit-trixie: | e2e-deps
	scripts/debian-root trixie -- env PYTEST_ADDOPTS='-W error::DeprecationWarning' \
	  make --no-print-directory unit VENV=.venv-trixie PYTHON=/usr/bin/python3

# 50 agents booting at once against one simulated account with AWS-like quotas (a few minutes).
fleet: $(STAMP)
	$(PY) -m pytest -q -s -m fleet

lint: $(STAMP)
	$(VENV)/bin/ruff check agent tests bench scripts setup.py
	$(VENV)/bin/mypy

# The package of release DIST (default: this machine's), installed and booted under that
# release's own systemd; e2e-bookworm, e2e-trixie: one release each.
e2e: $(STAMP) | e2e-deps
	@case " $(RELEASES) " in *" $(DIST) "*) ;; *) \
	  echo "e2e: DIST=$(DIST) is not a release the e2e tests boot ($(RELEASES))" >&2; exit 2 ;; esac
	AGENT_E2E_DIST=$(DIST) $(PY) -m pytest -q -m e2e

$(RELEASES:%=e2e-%): e2e-%:
	@$(MAKE) --no-print-directory e2e DIST=$*

# The tuned values fed to the real programs (PostgreSQL, Redis, nginx, Java, Node.js from
# Debian; gunicorn from the dev extra): tests/test_programs.py.
programs: $(STAMP) | programs-deps
	PROGRAMS_REQUIRED=1 $(PY) -m pytest -q -m programs

test: lint unit integration unit-user unit-trixie programs fleet $(RELEASES:%=e2e-%)

bench: $(STAMP)
	$(PY) bench/boot.py
	$(PY) bench/fleet.py
	$(PY) bench/readiness.py

# Keeps .cache (the releases' roots, downloaded packages, wheels): `rm -rf .cache` for those.
clean:
	rm -rf $(VENV) $(USER_VENV) .venv-trixie build dist *.egg-info .pytest_cache .mypy_cache \
	  .ruff_cache

# Packages in dist/: the agent in its own venv under /opt, built with the system's interpreter
# (PYTHON=python3.12 chooses another of /usr/bin); the .deb of release DIST in dist/DIST/.
.PHONY: deb rpm
deb: | deps
	DIST=$(DIST) PYTHON=$(PYTHON) packaging/deb/build.sh

rpm: | e2e-deps
	PYTHON=$(PYTHON) packaging/rpm/build.sh
