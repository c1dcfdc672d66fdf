# Every target bootstraps .venv from nothing (a Python >= 3.11 is the only prerequisite) and
# can be run again at no cost: the venv is rebuilt only when pyproject.toml changes.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The first Python >= 3.11 on PATH, unless PYTHON is given.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: venv test lint checkov demo bench infra ami clean

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
		echo "make: no Python >= 3.11 on PATH (tried python3.13, python3.12, python3.11, python3); set PYTHON=/path/to/python3.11" >&2; \
		exit 2; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP)

test: $(STAMP) checkov
	$(BIN)/python -m pytest

# checkov pins an old boto3, so it lives in a virtual environment of its own. --skip-download:
# no network; the checks ship with the package.
$(CHECKOV_STAMP):
	@test -n "$(PYTHON)" || { echo "make: no Python >= 3.11 on PATH" >&2; exit 2; }
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'checkov==3.3.30'
	@touch $@

checkov: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --directory terraform --framework terraform --skip-download --quiet --compact

# AWS: the GPU AMI first (optional, needs packer), then the stack; see README "Deploying to AWS".
infra: $(STAMP)
	$(BIN)/opsctl infra apply

ami: $(STAMP)
	$(BIN)/python images/ami/build.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/opsctl validate examples/hello.yaml
	$(BIN)/opsctl launch examples/hello.yaml --watch

bench: $(STAMP)
	@set -e; for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
