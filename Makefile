# Two entry points for a new user on a fresh machine:
#   make demo  - create .venv, install wattwheel (no torch: the shipped models run on ONNX
#                Runtime), run the demo bench on the bundled scenario
#   make test  - create .venv, install wattwheel with the live, dev, capacity (Ray) and train
#                extras (torch, CPU build, pinned by constraints.txt) and the system services
#                the tests start themselves, run ruff, mypy and pytest
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test check install install-dev system-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# The editable install is done once per venv (source changes need no reinstall) and again when
# pyproject.toml or constraints.txt change: a second `make demo` goes straight to the demo
# (pip's dependency check and editable build took 10-50 s here with nothing to do).
INSTALLED := $(VENV)/.installed

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

install-dev: $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e '.[live,dev,capacity,train]'
	touch $(INSTALLED)

system-deps:
	bash scripts/system-deps.sh

demo: install
	$(BIN)/wattwheel demo

check: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: system-deps check
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
