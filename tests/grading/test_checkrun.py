"""The check process: which cells it runs, the stubbed labkit, and every lab's own
solutions earning every check through it (no correct answer lost to a stub)."""

import os
import pickle
import subprocess
import sys

import nbformat
import pytest

from labkit.grading import checkrun, referee
from labkit.grading.checks import CHECKS
from labkit.grading.checks.core import GRADING_CASES, GRADING_DIR, GRADING_SEED
from labkit.grading.grade import portable_cases
from labkit.grading.submissions import check_cells, replaced_functions
from tests.support.paths import NOTEBOOKS
from tests.support.tinylab import tiny_instructor


def test_the_check_process_runs_the_cells_the_exercises_need_and_no_other():
    notebook = tiny_instructor()
    notebook.cells.insert(1, nbformat.v4.new_code_cell("import os\nunused = os.getcwd()"))
    notebook.cells.insert(2, nbformat.v4.new_code_cell("ROUND = round\nprint('a figure')"))
    agp = notebook.cells[4]
    agp.source = agp.source.replace("return ", "return ROUND(").replace("** 3", "** 3, 12)")
    kinds = [kind for kind, _ in checkrun.needed_cells(notebook)]
    sources = [source for _, source in checkrun.needed_cells(notebook)]
    assert kinds == ["setup", "setup", "exercise", "check", "exercise", "check"]
    assert sources[0] == "from labkit.grading import checks"
    assert sources[1].startswith("ROUND = round")


def test_a_magic_in_a_setup_cell_does_not_hide_the_names_it_defines():
    notebook = tiny_instructor()
    notebook.cells[0].source = "%matplotlib inline\nfrom labkit.grading import checks"
    assert checkrun.needed_cells(notebook)[0] == ("setup", notebook.cells[0].source)


def test_setup_imports_are_cut_to_the_names_the_check_process_reads():
    source = ("%matplotlib inline\nimport numpy as np, os\nimport torch.nn.functional as F\n"
              "from labkit import data, viz, zoo\nfrom math import *\nimport pandas\n"
              "model = zoo.pretrained('vgg-digits')\n")
    cut = checkrun.used_imports(source, {"F", "zoo", "os", "model"})
    assert cut.splitlines() == [
        "get_ipython().run_line_magic('matplotlib', 'inline')", "import os",
        "import torch.nn.functional as F", "from labkit import zoo", "from math import *",
        "model = zoo.pretrained('vgg-digits')"]
    assert checkrun.used_imports(source, {"F", "np", "os", "data", "viz", "zoo",
                                          "pandas"}) == source
    assert checkrun.used_imports("import os\ndef (:", set()) == "import os\ndef (:"


def test_the_stubbed_labkit_refuses_the_replaced_functions_and_keeps_the_rest(tmp_path):
    package = checkrun.stub_labkit(tmp_path, ["labkit.measure.get_sparsity",
                                              "labkit.pruning.schedule.agp_sparsity"])
    script = ("import torch\nfrom labkit import measure\nfrom labkit.pruning import schedule\n"
              "from labkit.grading.checks import measure as declared\n"
              "print(measure.num_parameters(torch.nn.Linear(2, 3)))\n"
              "for call in (lambda: declared.GET_SPARSITY.reference(torch.zeros(2)),\n"
              "             lambda: schedule.agp_sparsity(1, 2, 0.0, 0.5)):\n"
              "    try:\n        call()\n    except RuntimeError as error:\n"
              "        print(error)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(package.parent)})
    assert done.stdout.splitlines() == [
        "9",
        "labkit.measure.get_sparsity is not available while grading: it is what the "
        "exercise asks you to write",
        "labkit.pruning.schedule.agp_sparsity is not available while grading: it is what "
        "the exercise asks you to write"], done.stderr


def test_stubbing_a_name_that_is_no_top_level_function_is_refused(tmp_path):
    with pytest.raises(ValueError, match="labkit.measure: no top-level function nothing"):
        checkrun.stub_labkit(tmp_path, ["labkit.measure.nothing"])


@pytest.mark.parametrize("lab", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_each_labs_own_solutions_earn_every_check_in_the_check_process(lab, tmp_path):
    """The instructor notebook's cells, run as the grader runs a submission's: the
    stubs must never break a check's cases, its observation, or a setup cell."""
    notebook = nbformat.read(lab, as_version=4)
    package = checkrun.stub_labkit(tmp_path / "stub", replaced_functions(notebook))
    spec = checkrun.write_spec(tmp_path, notebook, 300)
    calls = sorted({cell.call for cell in check_cells(notebook) if cell.call in CHECKS})
    (tmp_path / "cases.pkl").write_bytes(pickle.dumps(
        portable_cases({CHECKS[call] for call in calls}, 5)))
    env = {**os.environ, "PYTHONPATH": str(package.parent), GRADING_SEED: "5",
           GRADING_DIR: str(tmp_path / "results"), "MPLBACKEND": "agg",
           GRADING_CASES: str(tmp_path / "cases.pkl")}
    done = subprocess.run([sys.executable, "-m", "labkit.grading.checkrun", str(spec)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    verdicts = referee.judge_all(calls, tmp_path / "results", 5)
    assert {call: v.message for call, v in verdicts.items() if not v.passed} == {}, \
        done.stdout[-3000:]
