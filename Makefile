# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run jsbi's main job (a small end-to-end demo on CPU)
#   make test   set up .venv, run ruff (check, format --check) and the test suite
#   make docs   run the tutorials at their small settings, then build the site into docs/_build/html
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,sbibm]"
	# sbibm's declared dependencies downgrade sbi; we only read its tasks and data files.
	$(BIN)/pip install --quiet --no-deps sbibm==1.1.0
	touch $(STAMP)

.PHONY: install demo test docs lint
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jsbi demo --out demo-out

# Lint first (seconds), then the suite.
test: lint
	$(BIN)/python -m pytest

# Offline; warnings are errors, so a broken reference or docstring fails the build.
docs: $(STAMP)
	$(BIN)/python docs/run_tutorials.py --settings small --out docs/_generated
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(BIN)/ruff check jsbi tests benchmarks examples docs
	$(BIN)/ruff format --check jsbi tests benchmarks examples docs
