# iiot-splitfed — developer and operator entry points.
#   make demo    one-machine stack: broker, ledgers, gateways, server, agents on simulated Modbus devices
#   make test    the test suite (runs `setup` first when needed)
#   make lint    ruff + mypy --strict on the packages
#   make bench   speed, memory and soak runs; results in bench/results/
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
EXTRAS ?= all,dev,build
PYTEST_ARGS ?=

.PHONY: setup test test-all lint bench demo clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml deploy/install-system-deps.sh
	bash deploy/install-system-deps.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# everything, including the slow soak/fault suite
test-all: setup
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check protocol
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench

demo: setup
	$(VENV)/bin/splitfed demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
