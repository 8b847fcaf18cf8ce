# One command sets up and runs each job: `make test`, `make quickstart`.
# Both create (or refresh, when pyproject.toml changes) a virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without an NVIDIA GPU, pin the CPU wheel of PyTorch (a bare `torch` requirement pulls a
# multi-GB CUDA build). Override for other setups: `make test TORCH_SPEC='torch==2.5.1'`.
TORCH_SPEC ?= $(shell if command -v nvidia-smi >/dev/null 2>&1; then echo 'torch>=2.1'; else echo 'torch==2.13.0'; fi)
PYTEST_ARGS ?=

.PHONY: setup test quickstart bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

quickstart: $(VENV)/.installed
	$(BIN)/onerec quickstart --out runs/quickstart

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/data_pipeline.py --out benchmarks/results

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
