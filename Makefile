# iiot-splitfed — developer and operator entry points.
#   make demo    one-machine stack: broker, ledgers, gateways, server, agents on simulated Modbus devices
#   make test    the test suite (runs `setup` first when needed)
#   make lint    ruff + mypy --strict on the packages + the import contract (setup.cfg [importlinter])
#   make bench   speed, memory and soak runs; results in bench/results/
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
EXTRAS ?= all,dev,build
PYTEST_ARGS ?=

DATA_DIR ?= $(or $(SPLITFED_DATA_DIR),data)

.PHONY: setup test test-all lint bench demo check-data dist clean

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
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m bench

# before the (slow, first-time) setup: the default dataset must be there. Skipped when
# DEMO_ARGS picks its own data (splitfed demo checks that itself before starting anything).
check-data:
	@case " $(DEMO_ARGS) " in *" --data-dir"*|*" --dataset"*) exit 0;; esac; \
	for f in PLAID_TRAIN.ts PLAID_TEST.ts; do \
	  if [ ! -r "$(DATA_DIR)/$$f" ]; then \
	    echo "error: $(DATA_DIR)/$$f is missing or unreadable. The checkout ships it in data/;" \
	         "restore it (git checkout -- data) or set SPLITFED_DATA_DIR to a directory" \
	         "holding PLAID_TRAIN.ts and PLAID_TEST.ts (UCR/UEA .ts files)." >&2; exit 1; \
	  fi; \
	done

demo: check-data setup
	$(VENV)/bin/splitfed demo $(DEMO_ARGS)

# wheel + sdist in dist/ (install on a board: pip install 'dist/iiot_splitfed-<v>-py3-none-any.whl[agent]')
dist: setup
	rm -rf dist build
	$(PY) -m build --no-isolation --outdir dist .
	@ls -l dist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
