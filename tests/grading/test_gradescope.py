"""The Gradescope autograder, without Gradescope: the zip is unpacked into a temporary
root laid out like ``/autograder`` and its ``run_autograder`` runs there on a correct,
a wrong, a crashing, a missing and a non-notebook submission of lab 00. Every
``results.json`` is validated against a JSON schema of Gradescope's documented fields.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import nbformat
import pytest

from labkit import zoo
from labkit.cli import main
from labkit.grading import seeds
from labkit.grading.gradescope import (
    ROOT_VARIABLE,
    UNGRADED,
    build_autograder,
    instructor_report,
    results_json,
    student_id,
    submitted_notebook,
)
from labkit.grading.records import Answer, CheckResult, LabGrade, Limits
from labkit.grading.release import tags
from tests.support.lab_submissions import LAB_00, exercises, instructor, submission, wrong_sparsity
from tests.support.paths import ROOT

VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
TEST_SCHEMA = {
    "type": "object",
    "required": ["score", "max_score", "name", "output", "visibility"],
    "additionalProperties": False,
    "properties": {
        "score": {"type": "number", "minimum": 0}, "max_score": {"type": "number", "minimum": 0},
        "status": {"enum": ["passed", "failed"]}, "name": {"type": "string", "minLength": 1},
        "name_format": {"type": "string"}, "number": {"type": ["string", "number"]},
        "output": {"type": "string"}, "output_format": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}}, "visibility": VISIBILITY,
        "extra_data": {"type": "object"},
    },
}
RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["score", "execution_time", "output", "tests"],
    "additionalProperties": False,
    "properties": {
        "score": {"type": "number", "minimum": 0},
        "execution_time": {"type": "integer", "minimum": 0},
        "output": {"type": "string", "minLength": 1}, "output_format": {"type": "string"},
        "test_output_format": {"type": "string"}, "test_name_format": {"type": "string"},
        "visibility": VISIBILITY, "stdout_visibility": VISIBILITY,
        "extra_data": {"type": "object"}, "tests": {"type": "array", "items": TEST_SCHEMA},
        "leaderboard": {"type": "array"},
    },
}
CONFIG = {"visibility": "visible", "hidden_visibility": "after_published"}


def validated(results: dict) -> dict:
    jsonschema.validate(results, RESULTS_SCHEMA)
    return results


# --- results.json from made-up grades --------------------------------------------------


def test_results_have_one_test_per_check_and_an_entry_per_question():
    grade = LabGrade("student", "00_baseline", [
        CheckResult("check_a", True, 2),
        CheckResult("check_b", False, 1, "b: case 'zeros' failed: expected 0, got 1"),
        CheckResult("check_c", False, 3, "c: case 'hidden case 2: big' failed: expected 1"),
    ], [Answer("q-1", "Why prune?", "To save energy.")], ["review exercise cell x"])

    results = validated(results_json([grade], ["a message"], CONFIG, 12.4))

    assert results["score"] == 2
    assert results["execution_time"] == 12
    assert results["output"] == "a message"
    assert "review" not in json.dumps(results)
    assert "00_baseline: review exercise cell x" in instructor_report([grade])
    assert [(t["name"], t["score"], t["max_score"], t["visibility"]) for t in results["tests"]] \
        == [("00_baseline: check_a", 2, 2, "visible"), ("00_baseline: check_b", 0, 1, "visible"),
            ("00_baseline: check_c", 0, 3, "after_published"),
            ("00_baseline: question q-1 (graded by hand)", 0, 0, "visible")]
    assert results["tests"][0]["output"] == "passed"
    assert results["tests"][3]["output"] == "Why prune?\n\nYour answer: To save energy."


def test_a_grader_problem_shows_the_student_one_line_and_the_instructor_the_details():
    grade = LabGrade("student", "00_baseline", [CheckResult("check_a", False, 2, "x")],
                     notes=["the sandbox could not start: bwrap: no"], mode="bwrap",
                     problem="the sandbox could not start: bwrap: no")
    results = validated(results_json([grade], [], CONFIG, 3))
    assert results == {"score": 0, "execution_time": 3, "output": UNGRADED,
                       "stdout_visibility": "hidden", "tests": []}
    assert "the grader failed: the sandbox could not start" in instructor_report([grade])


def test_answers_and_messages_are_escaped_for_spreadsheets_and_terminals():
    grade = LabGrade("student", "00_baseline", [
        CheckResult("check_a", False, 1, "=HYPERLINK(\"http://x\")\x1b[31m" + "y" * 50_000)],
        [Answer("q-1", "Why?", "@SUM(1)")])
    results = validated(results_json([grade], ["+1"], CONFIG, 1))
    message = results["tests"][0]["output"]
    assert message.startswith("'=HYPERLINK") and "\x1b" not in message
    assert len(message) < 2100 and "more characters cut" in message
    assert results["output"] == "'+1"


def test_each_student_draws_hidden_cases_of_their_own(tmp_path):
    assert student_id(tmp_path) == "student"
    (tmp_path / "submission_metadata.json").write_text(json.dumps(
        {"users": [{"email": "b@x.edu", "id": 7}, {"email": "a@x.edu", "id": 3}]}))
    assert student_id(tmp_path) == "3+7"


def test_the_submitted_notebook_is_found_by_name_or_as_the_only_one(tmp_path):
    (tmp_path / "sub" / "nested").mkdir(parents=True)
    (tmp_path / "sub" / "nested" / "mine.ipynb").write_text("{}")
    (tmp_path / "sub" / ".hidden.ipynb").write_text("{}")
    assert submitted_notebook("00_baseline", ["00_baseline"], tmp_path / "sub") == (
        tmp_path / "sub" / "nested" / "mine.ipynb", "")
    path, message = submitted_notebook("00_baseline", ["00_baseline", "01_x"], tmp_path / "sub")
    assert path is None
    assert message == "00_baseline: no notebook 00_baseline.ipynb was submitted " \
                      "(found: nested/mine.ipynb)"


# --- building the zip, bad input -------------------------------------------------------


def test_zip_refuses_labs_without_check_cells_and_writes_nothing(tmp_path, capsys):
    notebook = instructor()
    notebook.cells = [cell for cell in notebook.cells if "check" not in tags(cell)]
    (tmp_path / "labs").mkdir()
    nbformat.write(notebook, tmp_path / "labs" / "00_baseline.ipynb")
    out = tmp_path / "autograder.zip"
    assert main(["gradescope", str(tmp_path / "labs"), "--out", str(out)]) == 1
    assert "labkit gradescope: labs: " in capsys.readouterr().err
    with pytest.raises(ValueError, match="00_baseline.ipynb has no check cells"):
        build_autograder([tmp_path / "labs" / "00_baseline.ipynb"], out)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "labs"]


@pytest.mark.parametrize(("options", "message"), [
    ({"visibility": "public"}, "visibility must be one of hidden, after_due_date, "
                               "after_published, visible, got 'public'"),
    ({"hidden_visibility": "later"}, "hidden_visibility must be one of"),
])
def test_zip_refuses_an_unknown_visibility(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        build_autograder([LAB_00], tmp_path / "autograder.zip", **options)
    assert list(tmp_path.iterdir()) == []


def test_zip_refuses_bad_paths_and_overwriting(tmp_path):
    out = tmp_path / "autograder.zip"
    with pytest.raises(ValueError, match="out must be a .zip file, got"):
        build_autograder([LAB_00], tmp_path / "autograder.tar")
    with pytest.raises(ValueError, match="labs must be instructor notebooks or folders"):
        build_autograder([tmp_path / "missing.ipynb"], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .ipynb notebook"):
        build_autograder([tmp_path / "empty"], out)
    with pytest.raises(ValueError, match="two notebooks named 00_baseline.ipynb"):
        build_autograder([LAB_00, LAB_00.parent], out)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "empty"]
    out.write_bytes(b"old")
    with pytest.raises(ValueError, match="exists; pass force=True"):
        build_autograder([LAB_00], out)
    assert out.read_bytes() == b"old"


# --- the zip, run as Gradescope runs it ------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A copy of lab 00: the zip and the submissions are built from the same notebook."""
    path = tmp_path_factory.mktemp("labs") / LAB_00.name
    path.write_bytes(LAB_00.read_bytes())
    return path


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory, lab) -> Path:
    out = tmp_path_factory.mktemp("zip") / "autograder.zip"
    assert main(["gradescope", str(lab), "--out", str(out), "--cell-timeout", "120",
                 "--timeout", "800"]) == 0
    return out


def run_in_root(zip_path: Path, root: Path, files: dict[str, bytes],
                python: str = sys.executable) -> dict:
    """Unpack the zip as Gradescope does, put ``files`` in the submission, run it."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(root / "source")
    (root / "submission").mkdir()
    for name, content in files.items():
        (root / "submission" / name).write_bytes(content)
    script = root / "source" / "run_autograder"
    script.chmod(0o755)
    subprocess.run([str(script)], check=True, capture_output=True, timeout=900,
                   env={**os.environ, ROOT_VARIABLE: str(root), "LABKIT_PYTHON": python})
    return validated(json.loads((root / "results" / "results.json").read_text()))


def notebook_bytes(lab: Path, **sources: str) -> bytes:
    return nbformat.writes(submission(lab, **sources)).encode()


def test_zip_has_gradescope_layout(autograder_zip, lab):
    with zipfile.ZipFile(autograder_zip) as archive:
        names = set(archive.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
        config = json.loads(archive.read("autograder.json"))
    assert {"setup.sh", "run_autograder", "autograder.json", "labs/00_baseline.ipynb",
            "pyproject.toml", "constraints.txt", "labkit/grading/gradescope.py",
            f"labkit/weights/{zoo.shipped_path('vgg-digits').name}"} <= names
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert config["labs"] == ["00_baseline"] and config["isolation"] is None
    with zipfile.ZipFile(autograder_zip) as archive:
        secret = archive.read(f"labs/{seeds.SECRET_FILE}")
    assert secret == (lab.parent / seeds.SECRET_FILE).read_bytes() and len(secret) == 32
    assert config["limits"] == {**vars(Limits()), "cell_timeout_s": 120,
                                "notebook_timeout_s": 800}


def test_correct_and_wrong_submissions(autograder_zip, lab, tmp_path):
    correct = run_in_root(autograder_zip, tmp_path / "correct",
                          {"00_baseline.ipynb": notebook_bytes(lab, **exercises(lab))})
    wrong = run_in_root(autograder_zip, tmp_path / "wrong",
                        {"my lab.ipynb": notebook_bytes(lab, **wrong_sparsity(lab))})

    def scores(results):
        return {test["name"]: (test["score"], test["max_score"]) for test in results["tests"]
                if test["max_score"]}

    assert scores(correct) == {"00_baseline: check_get_sparsity": (1, 1),
                               "00_baseline: check_get_model_size": (1, 1)}, correct
    assert correct["score"] == 2
    questions = [t for t in correct["tests"] if t["name"].endswith("(graded by hand)")]
    assert questions and all(t["max_score"] == 0 for t in questions)
    assert scores(wrong)["00_baseline: check_get_sparsity"] == (0, 1), wrong
    assert wrong["score"] == 1
    failed = next(t for t in wrong["tests"] if t["name"] == "00_baseline: check_get_sparsity")
    assert failed["output"].startswith("get_sparsity: case 'all non-zero' failed")
    assert failed["status"] == "failed"


def test_crashing_submission_scores_zero_with_the_reason(autograder_zip, lab, tmp_path):
    sparsity = next(iter(exercises(lab)))
    results = run_in_root(autograder_zip, tmp_path,
                          {"00_baseline.ipynb": notebook_bytes(lab, **{
                              **exercises(lab), sparsity: "import os\nos._exit(1)"})})
    assert results["score"] == 0, results
    assert all("not run" in t["output"] or "died" in t["output"]
               for t in results["tests"] if t["max_score"]), results
    assert any("the kernel died while running this cell" in t["output"]
               for t in results["tests"]), results


@pytest.mark.parametrize(("files", "message"), [
    ({}, "00_baseline: no notebook 00_baseline.ipynb was submitted (found: nothing)"),
    ({"report.pdf": b"%PDF-1.4\n"}, "no notebook 00_baseline.ipynb was submitted "
                                    "(found: report.pdf)"),
    ({"00_baseline.ipynb": b'{"cells": ['}, "unreadable submission: not a readable notebook"),
])
def test_missing_or_non_notebook_submission_scores_zero(autograder_zip, tmp_path, files,
                                                         message):
    results = run_in_root(autograder_zip, tmp_path, files)
    assert results["score"] == 0
    assert message in results["output"] + "".join(t["output"] for t in results["tests"])
    assert {t["score"] for t in results["tests"]} == {0}


def test_a_failing_autograder_still_writes_results(autograder_zip, tmp_path):
    results = run_in_root(autograder_zip, tmp_path, {}, python="/bin/false")
    assert results == {"score": 0, "output": UNGRADED, "execution_time": 0,
                       "stdout_visibility": "hidden", "tests": []}


def test_the_guide_commands_run_verbatim_with_relative_paths(autograder_zip, lab, tmp_path):
    """``book/instructors.md``'s "try the zip" commands, run from the folder that holds
    ``autograder.zip``, with the course environment named relatively."""
    guide = (ROOT / "book" / "instructors.md").read_text()
    block = guide.split("<!-- try-the-zip -->")[1].split("```bash")[1].split("```")[0]
    commands = [line.removeprefix("$ ") for line in block.strip().splitlines()]
    (tmp_path / "autograder.zip").write_bytes(autograder_zip.read_bytes())
    (tmp_path / "student").mkdir()
    nbformat.write(submission(lab, **exercises(lab)), tmp_path / "student" / "00_baseline.ipynb")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    for command in commands:
        subprocess.run(command, shell=True, cwd=tmp_path, check=True, timeout=900,
                       capture_output=True)
    results = validated(json.loads((tmp_path / "try" / "results" / "results.json").read_text()))
    assert results["score"] == 2, results
