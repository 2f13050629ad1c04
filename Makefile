# barknet: build/test entry points. `make help` lists them.
# Every target first runs the idempotent set-up: a venv in .venv with the package
# installed in editable mode plus the `test` and `notebooks` extras. It is redone
# only when pyproject.toml changes (stamp file .venv/.installed).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# jupyter refuses to start as root without --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

NBVAL_FLAGS := --nbval --nbval-current-env --nbval-cell-timeout=120 \
               --nbval-sanitize-with notebooks/sanitize.cfg -p no:python

.PHONY: help setup test test-unit test-notebooks lab lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-16s %s\n", $$1, $$2}'

# The venv's interpreter; created only if missing.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Install (editable) with the extras; redone only when pyproject.toml is newer.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,notebooks]'
	touch $@

setup: $(STAMP) ## create .venv and install barknet[test,notebooks] (idempotent)

test: test-unit test-notebooks ## unit tests, then run and compare the notebooks (nbval)

test-unit: $(STAMP) ## unit tests only (pytest tests)
	$(PY) -m pytest tests

test-notebooks: $(STAMP) ## notebooks only: re-run each one and compare its stored outputs
	$(PY) -m pytest $(NBVAL_FLAGS) notebooks

lab: $(STAMP) ## start JupyterLab on 127.0.0.1 in notebooks/
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 $(ROOT_FLAG)

lint: $(STAMP) ## ruff check (code + notebooks) and ruff format --check (code only)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: ## remove .venv, caches and build leftovers
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +
