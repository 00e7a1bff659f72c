# The study's commands. `make repro` and `make test` work on a fresh machine with Python 3.11 and make.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GPU_STAMP := $(VENV)/.installed-gpu

# Data source for `make repro` (every data-source key of params.yaml is set from these and the project's defaults):
#   make repro                          -> Face Mask Lite from Kaggle (needs Kaggle credentials)
#   make repro FACES=<dir>              -> pairs synthesized from a folder of faces, with the project's own drawn masks
#   make repro LOCAL=<dir or zip>       -> a downloaded copy in Face Mask Lite layout
# With FACES (or LOCAL, for the generated-face sets): MASK=<overlay.png | masks.cfg | folder> masks every split with
# it; TEMPLATES=<folder> adds templates the lists TRAIN_MASKS, TEST_MASKS, ROBUSTNESS_MASKS may name (names separated
# by spaces); INDOMAIN=<folder of generated faces> adds the in-domain test sets. PROFILE=<file> then applies a
# parameter profile (profiles/; several, in order). GPU=1 installs the GPU build (requirements-gpu.txt) and runs Keras on JAX.
FACES ?=
LOCAL ?=
MASK ?=
TEMPLATES ?=
INDOMAIN ?=
TRAIN_MASKS ?=
TEST_MASKS ?=
ROBUSTNESS_MASKS ?=
PROFILE ?=
GPU ?=
# Test workers (pytest-xdist, a test module to a worker: tests/test_study.py builds the tiny study once)
TEST_WORKERS ?= 2
SOURCE_ARGS = --mask "$(MASK)" --templates "$(TEMPLATES)" --indomain "$(INDOMAIN)" --train-masks "$(TRAIN_MASKS)" \
	--test-masks "$(TEST_MASKS)" --robustness-masks "$(ROBUSTNESS_MASKS)"
RUN_ENV = PATH="$(CURDIR)/$(BIN):$$PATH" $(if $(GPU),KERAS_BACKEND=jax)

.PHONY: help env repro test lint lab bench clean-env

help:
	@echo "make repro [FACES=dir | LOCAL=dir-or-zip] [MASK=.. TEMPLATES=.. INDOMAIN=..] [PROFILE=yaml] [GPU=1]"
	@echo "                                                       run the study (dvc repro)"
	@echo "make test                                              run the tests"
	@echo "make lint                                              check the code with ruff"
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

$(GPU_STAMP): $(STAMP) requirements-gpu.txt
	$(BIN)/python -m pip install --quiet -r requirements-gpu.txt
	touch $(GPU_STAMP)

env: $(STAMP) $(if $(GPU),$(GPU_STAMP))

repro: env
ifneq ($(strip $(FACES)),)
	$(BIN)/python -m unmasking.params source faces "$(FACES)" $(SOURCE_ARGS)
else ifneq ($(strip $(LOCAL)),)
	$(BIN)/python -m unmasking.params source local "$(LOCAL)" $(SOURCE_ARGS)
else
	$(BIN)/python -m unmasking.params source kaggle $(SOURCE_ARGS)
endif
	$(foreach p,$(PROFILE),$(BIN)/python -m unmasking.params profile "$(p)" &&) true
	mkdir -p reports
	$(RUN_ENV) $(BIN)/dvc repro 2>&1 | tee reports/repro.log

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lib tests

lab: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

bench: $(STAMP)
	$(RUN_ENV) $(BIN)/python -m unmasking.bench
	$(RUN_ENV) $(BIN)/dvc repro --single-item report

clean-env:
	rm -rf $(VENV)
