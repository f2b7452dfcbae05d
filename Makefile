# restyle: `make demo` to see it work, `make test` to check it. Everything installs into
# this checkout (.venv and node_modules); nothing needs apt or sudo.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TEST_AZURITE_PORT ?= 10100
TEST_PREFECT_PORT ?= 4300
# The test stack's watcher also watches `probe`, a container no trigger reacts to, so the
# latency test measures the event without starting a flow run.
TEST_STACK := RESTYLE_STACK_DIR=$(CURDIR)/.stack-test AZURITE_PORT=$(TEST_AZURITE_PORT) \
	PREFECT_PORT=$(TEST_PREFECT_PORT) RESTYLE_WATCHER__CONTAINERS='["videos","styles","probe"]' 

.PHONY: install up down status demo test test-fast lint clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "restyle needs Python 3.11+"'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

up: install
	tools/stack.sh up

down:
	tools/stack.sh down

status:
	tools/stack.sh status

demo: up
	eval "$$(tools/stack.sh env)" && $(BIN)/python -m tools.demo

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(TEST_STACK) tools/stack.sh up
	set -o pipefail; eval "$$($(TEST_STACK) tools/stack.sh env)" && \
	  $(BIN)/pytest -ra --durations=15 $(PYTEST_ARGS); status=$$?; \
	  $(TEST_STACK) tools/stack.sh down; exit $$status

# Everything that needs no stack, no GPU and is not marked slow: the tier to run while editing.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow and not stack and not gpu" $(PYTEST_ARGS)

clean: down
	rm -rf .stack .stack-test out

.PHONY: azure-smoke
# The first command against a new Azure deployment: a tiny job that checks it in minutes.
azure-smoke: install
	$(BIN)/python -m tools.azure_smoke
