# Two commands, each doing its own set-up from a clean clone:
#   make quickstart   -> venv, install, run the whole paper pipeline on the built-in synthetic set
#   make test         -> venv, install, ruff + the full test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cdface-installed

.PHONY: quickstart test lint install clean

# PyTorch: the CUDA build from the default index where a GPU answers nvidia-smi; else the CPU build from PyTorch's
# own index (about 200 MB instead of several GB of CUDA libraries), or, where that index cannot be reached within
# a few seconds, from the default index (on Linux that is the CUDA build: it runs on the CPU as well).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

$(STAMP): pyproject.toml requirements-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if nvidia-smi -L >/dev/null 2>&1; then \
	  echo "cdface install: GPU found: PyTorch from the default index"; \
	  $(BIN)/python -m pip install --quiet -r requirements-cpu.txt; \
	elif $(BIN)/python -m pip install --quiet --timeout 5 --retries 0 --index-url $(TORCH_CPU_INDEX) \
	    -r requirements-cpu.txt; then \
	  echo "cdface install: PyTorch's CPU build ($(TORCH_CPU_INDEX))"; \
	else \
	  echo "cdface install: $(TORCH_CPU_INDEX) cannot be reached: PyTorch from the default index"; \
	  $(BIN)/python -m pip install --quiet -r requirements-cpu.txt; \
	fi
	$(BIN)/python -m pip install --quiet -e ".[test,onnx]"
	$(BIN)/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0  # MTCNN's weights only (cdface detect)
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
