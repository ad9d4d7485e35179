# backup-sync: the two commands users run are `make demo` and `make test`.
# Everything they need is installed here: a venv from PyPI, Azurite from npm, and
# kube-apiserver + etcd and helm built from Go modules (cached by version, see
# hack/versions.env).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: all setup control-plane tools bench-tools velero-tools demo test lint unit bench image clean help
.PHONY: bench-shards
.PHONY: conformance conformance-all

all: test

help:
	@echo "make demo    set up, start a local control plane and S3, seed backups, run backup-sync once"
	@echo "make test    set up and run the whole test suite (lint, types, unit, storage, integration)"
	@echo "make unit    only the fast unit tests"
	@echo "make lint    ruff + mypy + hadolint"
	@echo "make image   docker build the image (needs a Docker daemon; not part of the tests)"
	@echo "make bench   the benchmark beside Velero's own sync (N=1,000 and 5,000; steady state at 50,000)"

$(STAMP): setup.cfg pyproject.toml requirements.txt package.json package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -e '.[test,bench]'
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP)

control-plane: setup
	bash hack/build-control-plane.sh >/dev/null

# helm and promtool, for the chart tests (tests/chart; promtool checks the alert rules).
tools:
	bash hack/build-chart-tools.sh >/dev/null
	bash hack/build-alert-tools.sh >/dev/null

# toxiproxy and MinIO, for the benchmark and its smoke test (tests/integration).
bench-tools:
	bash hack/build-bench-tools.sh >/dev/null

# The real Velero (VELERO_VERSION, VELERO_NEXT_VERSION) and its AWS plugin, for
# tests/conformance and the benchmark's run of Velero's own sync.
velero-tools:
	bash hack/build-velero.sh >/dev/null

# The journey and the differential against the real Velero (part of `make test` too).
conformance: setup control-plane bench-tools velero-tools
	$(BIN)/pytest tests/conformance

# The differential against every Velero version in VELERO_CONFORMANCE_ALL (hack/versions.env;
# read with sed, not sourced: the worker reads VELERO_VERSION from its environment).
comma := ,
CONFORMANCE_ALL := $(shell sed -n 's/^VELERO_CONFORMANCE_ALL=//p' hack/versions.env)
conformance-all: setup control-plane bench-tools velero-tools
	for v in $(subst $(comma), ,$(CONFORMANCE_ALL)); do \
	  bash hack/build-velero.sh velero@$$v >/dev/null || exit 1; done
	BACKUP_SYNC_CONFORMANCE_VERSIONS=$(CONFORMANCE_ALL) $(BIN)/pytest tests/conformance

lint: setup
	$(BIN)/ruff check worker harness tests bench
	$(BIN)/ruff format --check worker harness tests bench
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

unit: setup
	$(BIN)/pytest tests/unit -q

test: lint control-plane tools bench-tools velero-tools
	$(BIN)/pytest

demo: control-plane
	$(BIN)/python -m harness.demo

# Rewrites docs/benchmark.{md,json,png} and the README's table; ~30 min on 2 cores (Velero's
# own sync beside the worker, at N = 1,000 and 5,000).
bench: control-plane bench-tools velero-tools
	$(BIN)/python -m bench

# Rewrites docs/benchmark-shards.{md,json}: 40 locations x 500 backups synced by one worker
# and by 4 shards started together, best of 2; ~30 min on 2 cores (docs/performance.md).
bench-shards: control-plane bench-tools
	$(BIN)/python -m bench.shards

# The image, with the base version pinned in hack/versions.env and the package's version.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' worker/__init__.py)
image:
	. hack/versions.env && docker build \
	  --build-arg PYTHON_VERSION=$$PYTHON_IMAGE_VERSION \
	  --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  -t backup-sync:$(VERSION) .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
