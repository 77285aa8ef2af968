# Set-up is part of every target: a fresh machine needs only `make quickstart` or `make test`.
PYTHON ?= python3
VENV ?= .venv
# CPU build of PyTorch; on a GPU machine use e.g. TORCH_SPEC=torch (or install torch first).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.clipforge-installed

.PHONY: setup quickstart test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all,dev]" playwright
	bash scripts/install_browser.sh || echo "note: chromium not installed; the browser test will skip"
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/clipforge quickstart

# pytest-xdist: one worker per core (-n auto), a test file's tests on one worker (its fixtures are built
# once), files in the order tests/conftest.py gives them (the longest work first). The multi-process
# (torchrun) tests run in the same pass: alone after it, a second pytest start and their processes'
# waits cost more than sharing the cores.
XDIST ?= -n auto --dist loadfile --no-loadscope-reorder
# Compiled bytecode (and pytest's rewritten test modules) written even where the environment sets
# PYTHONDONTWRITEBYTECODE: otherwise every worker and every process a test starts compiles the project
# from source again. Beside the sources (__pycache__/, git-ignored), not under a PYTHONPYCACHEPREFIX:
# a prefix also hides the bytecode pip compiled into the venv, so a fresh clone's first run compiled
# torch and every other dependency again in each process (~9 s per worker before the first test).
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

test: setup
	$(PYTEST) -q -ra $(XDIST)

test-fast: setup
	$(PYTEST) -q -m "not slow and not browser and not distributed and not full_suite" $(XDIST)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	cd src && $(abspath $(BIN))/lint-imports --config ../pyproject.toml

clean:
	rm -rf $(VENV) runs .pytest_cache
