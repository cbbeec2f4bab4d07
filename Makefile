# dropviz: `make run` starts the dashboard, `make test` runs every test. Both set everything up first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
REQUIREMENTS := requirements.txt requirements-test.txt
# The environment is cached outside the clone, keyed on the requirements, so CI and fresh clones reuse it.
REQ_HASH := $(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-12)
VENV ?= $(HOME)/.cache/dropviz/venv-$(REQ_HASH)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dropviz-installed-$(REQ_HASH)
HOST ?= 127.0.0.1
PORT ?= 8501
PYTEST_ARGS ?=

export PYTHONPATH := $(CURDIR)
export PYTHONUNBUFFERED := 1

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  Variables: VENV=$(VENV) HOST=$(HOST) PORT=$(PORT) PYTEST_ARGS='...'"

venv: $(STAMP) ## Create the virtual environment and install the requirements (cached)
	@if [ ! -e .venv ] || [ -L .venv ]; then ln -sfn $(VENV) .venv; fi

# The stamp is written only after a complete install. The lock makes a second clone (or CI job) that
# sets up at the same time wait, then find the stamp and install nothing.
$(STAMP):
	@mkdir -p $(dir $(VENV))
	@flock $(VENV).lock bash -ec 'test -f $@ && exit 0; \
	  echo ">> setting up $(VENV) (first time: about 2-3 minutes, ~6 GB)"; \
	  test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install --quiet --upgrade pip; \
	  $(PY) -m pip install --quiet -r requirements-test.txt; \
	  touch $@'

chromium: ## Install Debian's chromium for the browser tests (needs root or sudo)
	@bash scripts/ensure_chromium.sh

run: venv ## Start the dashboard and print its URL (refuses a taken PORT)
	@bash scripts/run_app.sh "$(PY)" "$(HOST)" "$(PORT)"

test: venv chromium ## Run unit, AppTest and browser tests
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv ## Run the benchmarks in bench/
	@for f in bench/*.py; do echo ">> $$f"; $(PY) $$f || exit 1; done

clean: ## Remove caches in the clone (keeps the shared environment and runs/)
	rm -rf .pytest_cache test-artifacts .venv
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help venv chromium run test bench clean
