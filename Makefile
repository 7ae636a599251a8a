# modelrun: `make serve` serves Iris predictions locally; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SERVE_INSTALLED := $(VENV)/.installed-serve
PORT ?= 8080
MLFLOW_PORT ?= 5000
STORE ?= file://$(CURDIR)/.modelrun/store

# Docker Compose: the v2 plugin (`docker compose`) where Docker has it, else v1 (`docker-compose`,
# what Debian packages and CI installs). Every target uses this one.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || \
	(command -v docker-compose >/dev/null 2>&1 && echo docker-compose))
NEED_COMPOSE = @test -n "$(COMPOSE)" || { echo "Docker Compose is missing: install Docker with \
	its compose plugin, or docker-compose (apt-get install docker-compose)" >&2; exit 1; }

.PHONY: install install-serve serve test test-fast image test-image lint format train repro local tracking monitor batch soak attack bench bench-batch bench-timings bench-train bench-explain bench-payloads screenshots clean clean-store

install: $(INSTALLED)  ## everything: serving, training, tests, linters, the Pulumi program
install-serve: $(SERVE_INSTALLED)  ## serving and training only

# Two levels in one venv: serving and training (`make serve`, `make train`) install only
# training/requirements.txt (the service's packages and training's); tests, linters and the
# Pulumi program install requirements.txt on top. Each reinstalls when its files change.
$(PY):
	@$(PYTHON) -m venv $(VENV) || { \
		echo "python3 -m venv failed: installing python3-venv with apt"; \
		apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip

$(SERVE_INSTALLED): training/requirements.txt function/requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -r training/requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

$(INSTALLED): requirements.txt training/tracking-requirements.txt $(SERVE_INSTALLED)
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

# The MLflow tracking server has a venv of its own (local/mlflow/requirements.txt says why).
MLFLOW_VENV := .venv-mlflow
MLFLOW_SERVER := $(MLFLOW_VENV)/.installed
$(MLFLOW_SERVER): local/mlflow/requirements.txt | $(PY)
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install --quiet -r local/mlflow/requirements.txt
	@touch $@

# The BigQuery stand-in the tests run the live-quality SQL on (local/bigquery/requirements.txt says why
# it has a venv of its own).
BIGQUERY_VENV := .venv-bigquery
BIGQUERY_EMULATOR := $(BIGQUERY_VENV)/.installed
$(BIGQUERY_EMULATOR): local/bigquery/requirements.txt | $(PY)
	$(PYTHON) -m venv $(BIGQUERY_VENV)
	$(BIGQUERY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BIGQUERY_VENV)/bin/python -m pip install --quiet -r local/bigquery/requirements.txt
	@touch $@

serve: $(SERVE_INSTALLED)  ## serve MODEL (default iris, trained if needed) or MODEL_URI on :$(PORT)
	PORT=$(PORT) STORE=$(STORE) $(PY) -m local.serve

# Six test processes on two cores: the suite waits on servers, emulators and Prometheus about as
# much as it computes (4:09 here against 5:08 with four).
JOBS ?= 6
test: install $(MLFLOW_SERVER) $(BIGQUERY_EMULATOR)  ## the whole suite but the image's (JOBS=1: one process)
	$(PY) -m pytest -n $(JOBS) --dist worksteal -m "not image"

# The inner loop: only the tests marked neither slow nor image, each refused any process or
# listening socket (tests/conftest.py: a test that starts one must be marked slow). In process
# and all CPU, so one test process per core: two more would only collect the suite twice more.
FAST_JOBS ?= 2
test-fast: install  ## the in-process tests only, no server or process (about a minute): the inner loop
	$(PY) -m pytest -n $(FAST_JOBS) --dist worksteal --fast -q

# Docker where a daemon answers, else buildah (IMAGE_ENGINE=buildah: buildah even beside Docker,
# which the image test needs); without the base image, a stand-in made from Debian packages
# (local/image.py says how, README "Testing" how it differs). Stdlib only: nothing to install.
IMAGE_ENGINE ?= auto
image: | $(PY)  ## build function/Dockerfile (modelrun) and local/mlflow/Dockerfile (modelrun-mlflow)
	$(PY) -m local.image --engine $(IMAGE_ENGINE)

test-image: install  ## run the image `make image` built, under buildah: serving, answers, batch, SIGTERM
	$(PY) -m pytest -m image tests/test_image.py

lint: install  ## ruff, mypy, actionlint (with shellcheck), hadolint, compose validation
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/actionlint -no-color -oneline .github/workflows/*.yml
	$(VENV)/bin/hadolint --failure-threshold warning function/Dockerfile
	$(NEED_COMPOSE)
	$(COMPOSE) --env-file local/.env.example -f local/compose.yaml --profile monitoring --profile tracking config -q
	$(VENV)/bin/hadolint --failure-threshold warning local/mlflow/Dockerfile

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

train: $(SERVE_INSTALLED)  ## train the default model into artifacts/iris
	$(PY) -m training train --out artifacts/iris

repro: install  ## the DVC pipeline (dvc.yaml, params.yaml): train only when data, code or a parameter changed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/dvc repro

# baseline.json: an artifact trained before versions carried a drift baseline is trained again.
artifacts/iris/baseline.json: | $(SERVE_INSTALLED)
	$(PY) -m training train --out artifacts/iris

local: install artifacts/iris/baseline.json  ## the Compose mirror, with monitoring and tracking (needs Docker)
	$(NEED_COMPOSE)
	$(PY) -m local.compose_env
	$(COMPOSE) -f local/compose.yaml --profile monitoring --profile tracking up --build

tracking: install $(MLFLOW_SERVER)  ## an MLflow tracking server on :$(MLFLOW_PORT), without Docker (runs in .modelrun/mlflow)
	$(PY) -m local.tracking --port $(MLFLOW_PORT) --mlflow $(MLFLOW_VENV)/bin/mlflow

monitor: install  ## the mirror without Docker: emulator, function, Prometheus, Alertmanager (MODEL or MODEL_URI: yours, as serve; DRIFT=1: the drift demo)
	PORT=$(PORT) STORE=$(STORE) $(PY) -m local.monitor $(if $(DRIFT),--drift,)

batch: install artifacts/iris/baseline.json  ## a batch job as N local processes on the GCS emulator (ROWS, TASKS), checked
	$(PY) -m local.batch --rows $(or $(ROWS),300000) --tasks $(or $(TASKS),4)

soak: install  ## a bounded soak (REQUESTS=100000): errors, latency, RSS growth
	$(PY) -m tests.perf.soak --requests $(or $(REQUESTS),100000)

attack: install  ## issue 35's attacks while clients predict: worker RSS and others' p99 (REQUESTS=10000)
	$(PY) -m tests.perf.attack --requests $(or $(REQUESTS),10000)

bench: install  ## modelrun vs MLServer 1.7.1 (QUICK=1: one short round); needs wrk (apt); then bench-batch, bench-explain, bench-payloads
	$(PY) -m tests.perf.bench $(if $(QUICK),--quick,)
	$(MAKE) bench-batch
	$(MAKE) bench-explain
	$(MAKE) bench-payloads

bench-explain: install  ## POST /explain p50/p95 (a forest, the mixed-type pipeline) against shap in process (QUICK=1; COMPARE_ROOT=a tree: cold starts)
	$(PY) -m tests.perf.explain_bench $(if $(QUICK),--quick,) $(if $(COMPARE_ROOT),--compare-root $(COMPARE_ROOT),)

bench-payloads: install  ## CPU per request and p50 with every request recorded (PAYLOAD_SAMPLE_RATE=1) against 0, alternating (QUICK=1)
	$(PY) -m tests.perf.payloads $(if $(QUICK),--quick,)

bench-timings: install  ## the times the suite only orders: rollout switch, time limit, deadline, lone request (QUICK=1)
	$(PY) -m tests.perf.timings $(if $(QUICK),--quick,)

bench-train: install  ## package on 10,000 mixed-type rows (goal 15 s) and train on 20,000, report included (QUICK=1)
	$(PY) -m tests.perf.train_bench $(if $(QUICK),--quick,)

bench-batch: install  ## batch scoring vs pandas read_csv + predict_proba + to_csv, and a 2 GB file's RSS (QUICK=1, GB=)
	$(PY) -m tests.perf.batch_bench $(if $(QUICK),--quick,) $(if $(GB),--gb $(GB),)

screenshots: install  ## the README's pictures of the pages (docs/images), taken in headless Chromium
	$(PY) -m tests.screenshots

# Never the published models (.modelrun/store), the local MLflow runs (.modelrun/mlflow) nor the
# development keys: see clean-store.
clean:  ## the venvs, training outputs and caches
	rm -rf $(VENV) $(MLFLOW_VENV) artifacts .cache .pytest_cache .mypy_cache .ruff_cache

clean-store:  ## delete the local store's published models and the dev keys: CONFIRM=yes
	@if [ "$(CONFIRM)" != "yes" ]; then \
		echo "clean-store deletes every model published in .modelrun/store, the MLflow runs in"; \
		echo ".modelrun/mlflow and the development keys (API and model signing):"; \
		find .modelrun/store -maxdepth 3 -path '*/versions/*' -type d 2>/dev/null | sed 's/^/  /'; \
		echo "run \`make clean-store CONFIRM=yes\` to delete them"; exit 1; fi
	rm -rf .modelrun
