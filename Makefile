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

# The sanitizer, kernel, cell timeout and my_work/ exclusion live in notebooks/conftest.py,
# so that plain `pytest --nbval notebooks/` does the same.
NBVAL_FLAGS := --nbval -p no:python

.PHONY: help setup test test-unit test-notebooks test-browser lab lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-16s %s\n", $$1, $$2}'

# The venv's interpreter; created only if missing.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# setuptools warns, in a dozen lines, that an editable install's folder could shadow the
# package: true of every editable install, and read by beginners as an error. Only that
# warning (matched by its first words) is silenced; errors and other warnings still print.
PIP_INSTALL := PYTHONWARNINGS='ignore:Editable installation' $(PY) -m pip install --quiet \
               --disable-pip-version-check

# Install (editable) with the extras; redone only when pyproject.toml is newer.
$(STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) -e '.[test,notebooks]'
	touch $@

setup: $(STAMP) ## create .venv and install barknet[test,notebooks] (idempotent)

# The `browser` extra (playwright; the browser itself is Debian's /usr/bin/chromium).
BROWSER_STAMP := $(VENV)/.installed-browser
$(BROWSER_STAMP): pyproject.toml | $(STAMP)
	$(PIP_INSTALL) -e '.[test,notebooks,browser]'
	touch $@

test: test-unit test-notebooks ## unit tests, then run and compare the notebooks (nbval)

test-unit: $(STAMP) ## unit tests only (pytest tests; skips tests/browser)
	$(PY) -m pytest tests

test-notebooks: $(STAMP) ## notebooks only: re-run each one and compare its stored outputs
	$(PY) -m pytest $(NBVAL_FLAGS) notebooks

test-browser: $(BROWSER_STAMP) ## widget notebooks in JupyterLab in headless chromium (slow)
	$(PY) -m pytest tests/browser

# The `bench` extra (uvloop, Twisted): only the benchmark compares against them.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PIP_INSTALL) -e '.[test,notebooks,bench]'
	touch $@

# Options for `make bench`, e.g. BENCH_ARGS="--quick" or "--json benchmarks/results.json".
BENCH_ARGS ?=
.PHONY: bench
bench: $(BENCH_STAMP) ## barknet vs raw sockets, asyncio, uvloop, Twisted (BENCH_ARGS=--quick)
	$(PY) -m barknet bench $(BENCH_ARGS)

# Extra jupyter options, e.g. LAB_ARGS="--port=8899 --no-browser" (tests/browser uses it).
LAB_ARGS ?=

# Your copy of the exercise notebooks (solutions removed) in notebooks/my_work/, which git
# and the nbval run ignore. An existing copy is kept: run the module with --force to replace it.
.PHONY: exercises run-notebooks
# Stored outputs are part of the course: after changing a notebook or the code it shows,
# re-run it top to bottom (no per-cell timing metadata, so re-runs do not churn diffs).
run-notebooks: $(STAMP) ## re-execute every notebook in place, top to bottom (NB=one file)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
		--ExecutePreprocessor.record_timing=False --ExecutePreprocessor.timeout=120 $(or $(NB),notebooks/[0-9]*.ipynb)

exercises: $(STAMP) ## write your exercise copies to notebooks/my_work/ (never overwrites)
	$(PY) -m barknet.course.exercise

# JupyterLab's own settings for the course: no news or update pop-up over the notebook
# (--LabApp.news_url=None does not stop it; a user setting does).
LAB_SETTINGS := $(VENV)/lab-settings
LAB_QUIET := $(LAB_SETTINGS)/@jupyterlab/apputils-extension/notification.jupyterlab-settings
$(LAB_QUIET): | $(PY)
	mkdir -p $(dir $@)
	printf '{"fetchNews": "false", "checkForUpdates": false}\n' > $@

lab: $(STAMP) $(LAB_QUIET) ## start JupyterLab on 127.0.0.1 in notebooks/
	JUPYTERLAB_SETTINGS_DIR=$(abspath $(LAB_SETTINGS)) $(VENV)/bin/jupyter lab \
		--notebook-dir=notebooks --ServerApp.ip=127.0.0.1 $(ROOT_FLAG) $(LAB_ARGS)

lint: $(STAMP) ## ruff check (code + notebooks), ruff format --check (code), mypy (the package)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean: ## remove .venv, caches and build leftovers
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +
