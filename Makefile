# radmesh — every target is listed by `make help` from its ## comment.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install infra-up infra-down mesh-up mesh-down down demo test test-unit test-integration chaos fuzz lint typecheck bench image image-test clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with radmesh and its dev tools (only when pyproject.toml changed)

infra-up: ## start RabbitMQ, Orthanc, HAPI FHIR (built with Maven on first use), the model server and Keycloak; install Chromium and promtool (idempotent)
	@bash deploy/infra-up.sh

infra-down: ## stop what infra-up started (by PID)
	@bash deploy/infra-down.sh

mesh-up: install infra-up ## start the six radmesh services in the background (logs in .run/services/)
	@bash deploy/mesh-up.sh

mesh-down: ## stop the radmesh services
	@bash deploy/mesh-down.sh

down: mesh-down infra-down ## stop everything radmesh started

demo: install infra-up ## the main job: infrastructure, six services, three studies in, results out
	@bash deploy/mesh-up.sh
	@status=0; $(BIN)/python -m samples demo || status=$$?; bash deploy/mesh-down.sh; \
	  echo "[demo] services stopped; infrastructure left running (make down stops it)"; exit $$status

lint: install ## ruff over the code
	$(BIN)/ruff check shared services samples bench tests deploy

typecheck: install ## mypy --strict over the code
	$(BIN)/mypy shared services samples bench tests

test-unit: install ## unit tests only (no network)
	$(BIN)/pytest -q tests/unit

test-integration: install infra-up ## integration tests against the running infrastructure
	$(BIN)/pytest -q -m integration tests

test: install lint typecheck infra-up ## lint, typecheck, bring the infrastructure up, run every test
	$(BIN)/pytest -q tests

chaos: install infra-up ## bursts of studies through the mesh while services are killed, the broker restarted, servers frozen (~8 min; alone)
	$(BIN)/pytest -q -s -m chaos tests/e2e/test_chaos.py

fuzz: install infra-up ## generated hostile input: 1,000+ cases per HTTP endpoint and per service queue (~2 min)
	$(BIN)/pytest -q -s -m fuzz tests/fuzz

image: ## build the radmesh container image with podman from a debootstrap base (no Docker engine needed)
	@bash deploy/image/build.sh

image-test: install infra-up image ## start one service from the image and check it is ready and stops cleanly
	$(BIN)/pytest -q -s -m image tests/image

bench: install infra-up ## benchmarks that print figures: radmesh beside a hand-rolled script (restarts the services), then HAPI FHIR, model transport, PACS, fetch, SR step, volume reading
	$(BIN)/python -m bench
	$(BIN)/python deploy/hapi-fhir/bench.py
	$(BIN)/python deploy/model-server/bench.py
	$(BIN)/python -m samples.bench
	$(BIN)/python -m samples.bench_fetch
	$(BIN)/python -m samples.bench_sr
	$(BIN)/python -m samples.bench_volume

clean: ## remove the venv and caches (not the run directory)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
