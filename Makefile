# Two commands a new user needs: `make demo` and `make test`. Both install into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export GENAI_HOME ?= $(CURDIR)/.genai
export PYTHONPYCACHEPREFIX ?= $(GENAI_HOME)/pycache
PYTEST_ARGS ?=

.PHONY: install demo test lint up down bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock infra/check_java.sh infra/check_chromium.sh
	bash infra/check_java.sh
	bash infra/check_chromium.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
	# torch first: DeepSpeed's source build must see the torch it will run with
	$(BIN)/uv pip install -q --python $(BIN)/python $$(grep -E '^torch==' requirements.lock)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-build-isolation-package deepspeed \
		-r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m infra.spark
	touch $(STAMP)

demo: install
	$(BIN)/genai demo

# The linters first (seconds): a layer violation or a lint error fails before the long suite.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

up: install
	$(BIN)/genai up

down:
	$(BIN)/genai down

bench: install
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/pretrain.py

clean:
	rm -rf $(GENAI_HOME)
