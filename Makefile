# modelrun: `make serve` serves Iris predictions locally; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PORT ?= 8080
STORE ?= file://$(CURDIR)/.modelrun/store

.PHONY: install serve test lint format train local monitor soak bench clean

install: $(INSTALLED)

# Reinstall whenever a requirements file changes; creating the venv may need python3-venv (apt).
$(INSTALLED): requirements.txt function/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
		echo "python3 -m venv failed: installing python3-venv with apt"; \
		apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

serve: install  ## train + publish Iris if needed, then serve it on http://localhost:$(PORT)
	PORT=$(PORT) STORE=$(STORE) $(PY) -m local.serve

test: install  ## the whole suite
	$(PY) -m pytest

lint: install  ## ruff, mypy, actionlint (with shellcheck), hadolint, compose validation
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/actionlint -no-color -oneline .github/workflows/*.yml
	$(VENV)/bin/hadolint --failure-threshold warning function/Dockerfile
	docker-compose --env-file local/.env.example -f local/compose.yaml --profile monitoring config -q

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

train: install  ## train the default model into artifacts/iris
	$(PY) -m training train --out artifacts/iris

artifacts/iris/metadata.json: | install
	$(PY) -m training train --out artifacts/iris

local: install artifacts/iris/metadata.json  ## the Compose mirror, with monitoring (needs Docker)
	$(PY) -m local.compose_env
	docker compose -f local/compose.yaml --profile monitoring up --build

monitor: install  ## the mirror without Docker: emulator, function, Prometheus, Alertmanager
	PORT=$(PORT) $(PY) -m local.monitor

soak: install  ## a bounded soak (REQUESTS=100000): errors, latency, RSS growth
	$(PY) -m tests.perf.soak --requests $(or $(REQUESTS),100000)

bench: install  ## modelrun vs MLServer 1.7.1 (QUICK=1: one short round); needs wrk (apt)
	$(PY) -m tests.perf.bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) artifacts .modelrun .pytest_cache .mypy_cache .ruff_cache
