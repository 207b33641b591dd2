# The workbook's commands. `make book` builds the site, `make test` runs every test.
# Both create the course environment in .venv on first use (Python 3.10+, pinned by
# constraints.txt so torch is the CPU build).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= auto
SUBMISSIONS ?= submissions
LABS_RUNS ?= 3

.PHONY: book test test-browser lab execute student grade bench clean env

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going

# Tests and labs run in parallel, one process per core, each on one thread: small
# tensors gain nothing from more threads, and oversubscribed cores slow everything.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadfile tests
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadfile --nbval-lax labs

test-browser: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,browser]" -c constraints.txt
	test -f _build/html/index.html || $(MAKE) book
	$(BIN)/python -m pytest -p no:cacheprovider browser_tests

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,lab]" -c constraints.txt
	$(BIN)/jupyter lab labs

execute: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m labkit execute labs/*.ipynb

student: $(STAMP)
	$(BIN)/labkit release labs --out student

grade: $(STAMP)
	$(BIN)/labkit grade $(SUBMISSIONS) --labs labs --out grades.csv

# Benchmarks against torch.nn.utils.prune and Torch-Pruning; labs run on one thread
# each, as under `make test`. LABS_RUNS=1 times each lab once instead of three times.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]" -c constraints.txt
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.run --labs-runs $(LABS_RUNS)

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis student
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
