# Two commands, each doing its own set-up from a clean clone:
#   make quickstart   -> venv, install, run the whole paper pipeline on the built-in synthetic set
#   make test         -> venv, install, ruff + the full test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cdface-installed

.PHONY: quickstart test lint install clean

$(STAMP): pyproject.toml requirements-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-cpu.txt
	$(BIN)/python -m pip install --quiet -e ".[test,onnx]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/cdface quickstart

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
