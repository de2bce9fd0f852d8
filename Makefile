# minidiff: `make demo` and `make test` set everything up in .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch is enough for everything here; override on a GPU box, e.g.
#   make test TORCH_SPEC="torch>=2.1"
TORCH_SPEC ?= torch==2.13.0
# pytest workers (pytest-xdist): one per core, at most this many; each runs its tensors on one thread
TEST_JOBS ?= 4

.PHONY: setup setup-core demo data test test-fast stubs check-stubs clean

$(VENV)/.core:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup-core: $(VENV)/.core
setup: $(VENV)/.dev

## Train the 2-D demo (at most 60 s), write runs/demo/samples.png and runs/demo/reverse.gif
demo: $(VENV)/.core
	$(BIN)/minidiff demo --out runs/demo

## Fashion-MNIST, for the image tests and notebooks 08, 10, 11: an existing folder, else Debian's
## dataset-fashion-mnist (as root, with apt-get), else a checked download of the four official
## files (30 MB) into $MINIDIFF_DATA/fashion-mnist (default ~/.cache/minidiff)
data: $(VENV)/.core
	$(BIN)/minidiff data fashion-mnist

## The whole test suite, after the data step: stub drift check, library tests, lesson checks (and
## the proof that each fails on its blank stub), every notebook executed in fast mode
test: $(VENV)/.dev data
	$(BIN)/python -m minidiff.exercises --check
	MINIDIFF_FAST=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --maxprocesses $(TEST_JOBS) --dist worksteal --durations=15

stubs: $(VENV)/.core
	$(BIN)/python -m minidiff.exercises --write

clean:
	rm -rf $(VENV) runs .pytest_cache
