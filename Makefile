# The study's commands. `make repro` and `make test` work on a fresh machine with Python 3.11 and make.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Data source for `make repro` (recorded as DVC parameters in params.yaml and dvc.lock):
#   make repro                          -> Face Mask Lite from Kaggle (needs Kaggle credentials)
#   make repro FACES=<dir> [MASK=<png>] -> pairs synthesized from a folder of faces (MASK= for the drawn mask)
#   make repro LOCAL=<dir or zip>       -> a downloaded copy in Face Mask Lite layout
# PROFILE=<file> also applies a parameter profile (e.g. profiles/gpu-long.yaml) to params.yaml first.
FACES ?=
PROFILE ?=
LOCAL ?=
MASK ?= ../shared/data/mask-templates/ohyicong-masksdetection/default-mask.png

.PHONY: help env repro test lab bench clean-env

help:
	@echo "make repro [FACES=dir [MASK=png] | LOCAL=dir-or-zip] [PROFILE=yaml]   run the study (dvc repro)"
	@echo "make test                                              run the tests"
	@echo "make lab                                               open the notebooks in JupyterLab"
	@echo "make bench                                             measure the study's speed (reports/bench.json)"

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (unmasking)" >/dev/null
	touch $(STAMP)

env: $(STAMP)

repro: $(STAMP)
ifneq ($(strip $(FACES)),)
	$(BIN)/python -m unmasking.params set download.source=faces "download.faces=$(FACES)" "download.mask=$(MASK)"
else ifneq ($(strip $(LOCAL)),)
	$(BIN)/python -m unmasking.params set download.source=local "download.local=$(LOCAL)"
else
	$(BIN)/python -m unmasking.params set download.source=kaggle
endif
ifneq ($(strip $(PROFILE)),)
	$(BIN)/python -m unmasking.params profile "$(PROFILE)"
endif
	mkdir -p reports
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro 2>&1 | tee reports/repro.log

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lab: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m unmasking.bench

clean-env:
	rm -rf $(VENV)
