"""One correct lab-00 submission graded stage by stage in each isolation mode.

Prints, for each mode named on the command line and three repetitions, the seconds of the
notebook's run (pytest, nbval and the kernel), of the check process and of the referee,
and what the check process adds to the other two (the goal: at most 25%).
``--in-container`` runs the same inside the Docker-like container of the test suite
(``tests/support/containerlib.py``: root with Docker's capabilities and a seccomp filter that
refuses namespaces), where the ``container`` mode is the one that can run::

    OMP_NUM_THREADS=1 python -m benchmarks.isolation_modes bwrap process
    OMP_NUM_THREADS=1 python -m benchmarks.isolation_modes --in-container container
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import nbformat

from labkit import zoo
from labkit.grading import grade, referee
from labkit.grading.records import GradingConfig, Limits
from labkit.grading.release import tags
from labkit.grading.submissions import merge, read_submission, replaced_functions
from tests.support.containerlib import environment, run_in_container
from tests.support.lab_submissions import LAB_00, exercises, submission

from .config import ROOT

REPETITIONS = 3


def stages(mode: str) -> tuple[float, float, float]:
    """Seconds of the notebook's run, the check process and the referee, in ``mode``."""
    instructor = nbformat.read(LAB_00, as_version=4)
    replaced = replaced_functions(instructor)
    config = GradingConfig(Limits(), b"benchmark", mode, zoo.cache_dir(), 1)
    with tempfile.TemporaryDirectory() as name:
        path = Path(name) / "submission.ipynb"
        nbformat.write(submission(LAB_00, **exercises(LAB_00)), path)
        merged, _ = merge(instructor, read_submission(path))
        sources = tuple(cell.source for cell in merged.cells if "exercise" in tags(cell))
        private = Path(name)  # run_nbval opens it to the submission's user (search only)
        start = time.perf_counter()
        grade.run_nbval(private, merged, config, mode, 7, sources, replaced)
        notebook_s = time.perf_counter() - start
        start = time.perf_counter()
        results, _ = grade.run_checks(private, merged, replaced, config, mode, 7)
        checks_s = time.perf_counter() - start
        start = time.perf_counter()
        referee.judge_apart(["check_get_model_size", "check_get_sparsity"], results, 7)
        return notebook_s, checks_s, time.perf_counter() - start


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--in-container":
        done = run_in_container([sys.executable, "-m", "benchmarks.isolation_modes",
                                 *argv[1:]], {}, environment(PYTHONPATH=str(ROOT)),
                                timeout=1800)
        print(done.stdout, done.stderr, end="")
        return
    zoo.pretrained("vgg-digits", progress=False)
    for mode in argv:
        for _ in range(REPETITIONS):
            notebook_s, checks_s, referee_s = stages(mode)
            total = notebook_s + checks_s + referee_s
            added = checks_s / (notebook_s + referee_s)
            print(f"{mode}: notebook {notebook_s:.1f} s, check process {checks_s:.1f} s, "
                  f"referee {referee_s:.1f} s, in all {total:.1f} s; the check process "
                  f"adds {added:.0%}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
