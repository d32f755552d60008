# `make demo`: set up .venv (once) and train on the bundled PneumoniaMNIST cohort.
# `make test`: set up .venv (once) and run the whole test suite (what CI runs, in a fresh clone: .ci/run).
# `make test-fast`: the tests not marked slow (no multi-process, kill-and-resume, export or benchmark runs).
# `make mutation`: mutation testing (mutmut) of the evaluation, cohort and reader code; outside CI (docs/MUTATION.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-egan_med

.PHONY: setup demo test test-fast mutation bench tensorboard clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev,export,xrv,bundle]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m egan_med.train configs/demo.yaml --out runs/demo

# CheXpert's real train.csv ships inside the torchxrayvision wheel on PyPI; the exact-count test reads it from
# there (never committed: Stanford's terms forbid redistribution). Offline, that one test is skipped and says so.
CHEXPERT_CSV := .cache/chexpert/chexpert_train.csv.gz

$(CHEXPERT_CSV):
	mkdir -p .cache/chexpert
	-$(BIN)/python -m pip download -q --no-deps torchxrayvision==1.5.7 -d .cache/chexpert && \
	$(BIN)/python -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[2]+'.tmp','wb').write(z.read('torchxrayvision/data/chexpert_train.csv.gz'))" \
	    .cache/chexpert/torchxrayvision-1.5.7-py3-none-any.whl $@ && mv $@.tmp $@

test: setup $(CHEXPERT_CSV)
	EGAN_CHEXPERT_CSV=$$(test -f $(CHEXPERT_CSV) && echo $(CHEXPERT_CSV)) $(BIN)/python -m pytest -q --durations=12

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Slow (tens of minutes on 2 cores): each group is mutated with only the fast tests that cover it.
# GROUPS="metrics cohort" runs some; results in .mutation/<group>.json, scores and survivors in docs/MUTATION.md.
mutation: setup
	$(BIN)/python -m pip install -q -e ".[mutation]"
	$(BIN)/python scripts/mutation.py $(GROUPS)

bench: setup
	$(BIN)/python scripts/bench.py

tensorboard: setup
	$(BIN)/tensorboard --logdir runs

clean:
	rm -rf runs .pytest_cache
