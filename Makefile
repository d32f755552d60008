# `make demo`: set up .venv (once) and train on the bundled PneumoniaMNIST cohort.
# `make test`: set up .venv (once) and run the test suite (what CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-egan_med

.PHONY: setup demo test bench tensorboard clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m egan_med.train configs/demo.yaml --out runs/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python scripts/bench.py

tensorboard: setup
	$(BIN)/tensorboard --logdir runs

clean:
	rm -rf runs .pytest_cache
