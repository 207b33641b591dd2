# The workbook's commands. `make book` builds the site, `make test` runs every test.
# Both create the course environment in .venv on first use (Python 3.11+, pinned by
# constraints.txt so torch is the CPU build). `make test` needs bubblewrap.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JOBS ?= auto
CORES := $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
TEST_JOBS ?= $(shell echo $$(( $(CORES) * 3 / 2 )))
SUBMISSIONS ?= submissions
LABS_RUNS ?= 3
EDITION ?= instructor
STUDENT_SITE := _build/student
STUDENT_TREE := $(STUDENT_SITE)/source

.PHONY: book test test-browser lab execute student grade bench clean env

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]" -c constraints.txt
	touch $(STAMP)

# `make book` builds the instructor edition into _build/html (solutions and model answers
# folded); `make book EDITION=student` builds the site from the released student notebooks
# into _build/student/html, for a course to publish while the labs are graded, and writes
# into _build/student/branch what the `student` branch holds (the released notebooks the
# student edition's launch buttons open). Both derive the labs' install cells from
# _config.yml and publish the course wheel and constraints.txt under the site's course/,
# built from this tree without downloading anything.
SITE := $(if $(filter student,$(EDITION)),$(STUDENT_SITE)/html,_build/html)

book: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python book/figures/make_figures.py
	$(BIN)/python book/publish.py install-cells
ifeq ($(EDITION),student)
	rm -rf $(STUDENT_SITE)
	mkdir -p $(STUDENT_TREE)
	tar -cf - --exclude=./.git --exclude=./.venv --exclude=./_build --exclude=./labs \
	  --exclude=./student --exclude=./build . | tar -xf - -C $(STUDENT_TREE)
	$(BIN)/labkit release labs --out $(STUDENT_TREE)/labs --force
	$(BIN)/python book/publish.py student-edition $(STUDENT_TREE)
	$(BIN)/jupyter-book build $(STUDENT_TREE) --warningiserror --keep-going
	mv $(STUDENT_TREE)/_build/html $(STUDENT_SITE)/html
	$(BIN)/python book/publish.py student-branch $(STUDENT_TREE) $(STUDENT_SITE)/branch
else
	$(BIN)/jupyter-book build . --warningiserror --keep-going
endif
	rm -rf $(SITE)/course
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --no-index \
	  --wheel-dir $(SITE)/course .
	cp constraints.txt $(SITE)/course/

# Tests and labs run in parallel, each process on one thread: small tensors gain nothing
# from more threads. The labs take one process per core; the tests three per two cores,
# because the grading tests wait on kernels and sandboxes much of their time (on two
# cores, `pytest -n N --dist loadfile tests`: 13 min with two processes, 11.5 to 13
# with three, no faster with four; with three the cores were 39% busy).
test: $(STAMP)
	@command -v bwrap >/dev/null || { echo "make test needs bubblewrap, the grader's sandbox:" \
	  "apt-get install bubblewrap (Debian, Ubuntu) or dnf install bubblewrap (Fedora)"; exit 1; }
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile -rs tests
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadfile --nbval-lax labs

test-browser: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,browser]" -c constraints.txt
	test -f _build/html/index.html || $(MAKE) book
	test -f $(STUDENT_SITE)/html/index.html || $(MAKE) book EDITION=student
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
	rm -rf _build build .pytest_cache .ruff_cache .hypothesis student
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
