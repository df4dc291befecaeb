# EMS — two commands for a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BENCH ?=
PYTEST_ARGS ?=

.PHONY: run test lint bench services install install-dev browser clean

## The whole system with demo data, on embedded defaults (SQLite, embedded Redis and Mongo-wire).
run: install
	$(PY) manage.py run_stack

## Install what the tests need, start the services they need, run lint and the whole suite with coverage.
test: install-dev browser services lint
	$(PY) manage.py makemigrations --check --dry-run --settings=ems.settings.test
	$(PY) -m pytest --cov --cov-report=term $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Benchmarks: one JSON object per line. `make bench BENCH=ledger` runs those named ledger*.
bench: install-dev services
	@if [ -f requirements-bench.txt ]; then $(PIP) install -q -r requirements-bench.txt; fi
	BENCH=$(BENCH) $(PY) -m bench.run

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python requirements.txt
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "Chromium missing: run 'sudo apt-get install -y chromium'"; exit 1; fi; \
	fi

## PostgreSQL and Redis on this machine: start them if they are not answering.
services:
	@bash scripts/services.sh

clean:
	rm -rf var .coverage .coverage.* htmlcov .pytest_cache
