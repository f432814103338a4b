# Every target does its own set-up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/demo.yaml
# docker/build-base.sh makes this stand-in for python:3.11-slim, for machines that reach no image registry.
STAND_IN_BASE := cutover-base:bookworm
BASE_IMAGE ?= $(STAND_IN_BASE)
IMAGE ?= cutover:latest

.PHONY: run demo test lint bench clean docker-ready image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/cutover serve --config $(CONFIG) --key-hint sk-cutover-demo

demo: $(VENV)/.installed
	$(BIN)/cutover demo

# tests/test_docker_image.py builds and runs the image: a Docker daemon and the base image first.
# The official openai npm client, for tests/gateway/test_node_sdk.py.
tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: $(VENV)/.dev-installed docker-ready tests/node/node_modules/.installed
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus) || true
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Installs docker.io and starts dockerd when needed, builds the stand-in base once (README.md, "Container image").
docker-ready:
	bash docker/ensure-docker.sh
	bash docker/build-base.sh $(STAND_IN_BASE)

# pip inside the build reaches PyPI through the host's network; a proxy's CAs go in docker/certs/*.crt.
# With a registry: make image BASE_IMAGE=python:3.11-slim
image: docker-ready
	docker build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/gateway_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
