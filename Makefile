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
# once), files in the order tests/conftest.py gives them (the longest work first).
XDIST ?= -n auto --dist loadfile --no-loadscope-reorder

# The multi-process tests start one process per core themselves: they run after the others, alone.
test: setup
	$(BIN)/python -m pytest -q -ra $(XDIST) -m "not distributed"
	$(BIN)/python -m pytest -q -ra -m distributed

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser and not distributed" $(XDIST)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	cd src && $(abspath $(BIN))/lint-imports --config ../pyproject.toml

clean:
	rm -rf $(VENV) runs .pytest_cache
