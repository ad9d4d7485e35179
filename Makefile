# backup-sync: the two commands users run are `make demo` and `make test`.
# Everything they need is installed here: a venv from PyPI, Azurite from npm, and
# kube-apiserver + etcd built from Go modules (cached by version, see hack/versions.env).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: all setup control-plane demo test lint unit clean help

all: test

help:
	@echo "make demo    set up, start a local control plane and S3, seed backups, run backup-sync once"
	@echo "make test    set up and run the whole test suite (lint, types, unit, storage, integration)"
	@echo "make unit    only the fast unit tests"
	@echo "make lint    ruff + mypy"

$(STAMP): setup.cfg pyproject.toml requirements.txt package.json package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -e '.[test]'
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP)

control-plane: setup
	bash hack/build-control-plane.sh >/dev/null

lint: setup
	$(BIN)/ruff check worker harness tests
	$(BIN)/ruff format --check worker harness tests
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit -q

test: lint control-plane
	$(BIN)/pytest

demo: control-plane
	$(BIN)/python -m harness.demo

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
