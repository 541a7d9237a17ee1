# `make reproduce` sets up .venv and runs the main job on a budget profile (PROFILE=quick by default; PROFILE=medium
# for the paper's ordering on a CPU in about an hour; PROFILE=paper for the full protocol;
# ABLATIONS=true adds config/ablations). `make test` sets up .venv, lints and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PROFILE ?= quick
ABLATIONS ?= false
CORES ?= $(shell nproc)
CONFIGFILE := $(if $(filter paper,$(PROFILE)),config/config.yaml,config/$(PROFILE).yaml)
PROFILES := $(sort paper $(filter-out config,$(basename $(notdir $(wildcard config/*.yaml)))))
# The offline dataset mirror beside this checkout, when there is one; otherwise the official sources.
export ICSTN_DATA_MIRROR ?= $(wildcard $(abspath ../shared/datasets))
export PATH := $(BIN):$(PATH)

.PHONY: setup reproduce test lint clean device-wheels profile

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# before setup, which takes minutes on a fresh machine
profile:
	@$(if $(filter $(PROFILE),$(PROFILES)),true,echo "unknown PROFILE=$(PROFILE); allowed: $(PROFILES) (config/<profile>.yaml)" >&2; exit 2)

reproduce: profile setup
	snakemake --cores $(CORES) --configfile $(CONFIGFILE) --config ablations=$(ABLATIONS) --rerun-incomplete
	@echo "report: $(CURDIR)/reports/index.html"
	@python -m pipeline.tracking --experiments $(basename $(notdir $(wildcard config/grids/*.yaml config/grids/*.yml) $(if $(filter true True,$(ABLATIONS)),$(wildcard config/ablations/*.yaml config/ablations/*.yml))))

lint: setup
	ruff check .
	snakefmt --check workflow/
	snakemake --lint --cores 1

test: lint
	python -m pytest

# What a GPU machine lacks, for benchmarks/device_check.sh and benchmarks/reference_run.sh: wheels
# (its Python is 3.12) and the dataset files of the reference grid (MNIST by default).
REFERENCE_DATA ?= mnist
device-wheels: setup
	$(BIN)/python -m pip download -q -d .device/wheels --only-binary=:all: --python-version 3.12 jsonschema pooch
	mkdir -p .device/mirror && cp -rL $(ICSTN_DATA_MIRROR)/$(REFERENCE_DATA) .device/mirror/

clean:
	rm -rf results reports/tables reports/figures reports/index.html logs .snakemake
