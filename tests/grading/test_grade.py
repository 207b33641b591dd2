"""Grading: merged notebooks, nbval in a bubblewrap sandbox, the referee, the tables.

Most tests use a tiny instructor notebook written into ``tmp_path`` with two of labkit's
quick checks (AGP's schedule and the channel count), so its kernels start in seconds and
short timeouts are safe; one end-to-end test grades made-up submissions of the shipped
lab 00 through the command line. The dishonest submissions are in ``test_redteam.py``.
"""

import csv
import json
import os
import re
import stat
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from labkit import zoo
from labkit.cli import main
from labkit.grading import isolation, sandbox, seeds
from labkit.grading.grade import grade
from labkit.grading.records import (
    Answer,
    CheckResult,
    GradingConfig,
    LabGrade,
    Limits,
    Submission,
    SubmissionError,
)
from labkit.grading.referee import Verdict
from labkit.grading.release import ANSWER_PLACEHOLDER, release_notebook
from labkit.grading.scoring import NbvalRun, score
from labkit.grading.submissions import (
    check_cells,
    find_submissions,
    load_labs,
    merge,
    question_answers,
    read_submission,
    review_notes,
)
from labkit.grading.tables import ALL_LABS, safe_cell, table_paths, write_tables
from labkit.grading.untrusted import UntrustedFileError, clean_text, read_text
from tests.support.lab_submissions import LAB_00
from tests.support.paths import NOTEBOOKS
from tests.support.tinylab import TINY, solutions, student_copy, tiny_instructor

TINY_LIMITS = Limits(cell_timeout_s=8, notebook_timeout_s=300)

def read_csv(path: Path) -> list[tuple]:
    with open(path, newline="") as file:
        return [tuple(row) for row in csv.reader(file)]


def assert_rows(actual: list[tuple], expected: list[tuple]) -> None:
    """Compare tables cell by cell; an expected cell may be a compiled regex."""
    assert len(actual) == len(expected), actual
    for got, want in zip(actual, expected, strict=True):
        assert len(got) == len(want), got
        for cell, pattern in zip(got, want, strict=True):
            if isinstance(pattern, re.Pattern):
                assert pattern.fullmatch(cell), (got, pattern.pattern)
            else:
                assert cell == pattern, got


# --- instructor notebooks and submissions (no kernel) ----------------------------------


@pytest.mark.parametrize("field", ["cell_timeout_s", "notebook_timeout_s", "memory_gib",
                                   "file_size_mib", "disk_mib"])
@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_limits_reject_non_positive_numbers(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a positive number, got {value!r}"):
        Limits(**{field: value})


def test_check_cells_are_named_by_their_check_function_with_their_points():
    checks = check_cells(tiny_instructor())
    assert [(c.code_index, c.cell_id, c.name, c.points) for c in checks] == [
        (2, "cell-3", "check_agp_sparsity", 2), (4, "cell-5", "check_get_num_channels_to_keep", 1)]


@pytest.mark.parametrize("points", [-1, 1.5, "2", True])
def test_check_cells_reject_bad_points(points):
    notebook = tiny_instructor()
    notebook.cells[3].metadata["points"] = points
    with pytest.raises(ValueError, match=f"lab.ipynb, check cell cell-3: points must be an int "
                                         f">= 0, got {re.escape(repr(points))}"):
        check_cells(notebook, "lab.ipynb")


def test_load_labs_rejects_notebooks_without_cell_ids(tmp_path):
    old = {"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [],
                      "execution_count": None}], "metadata": {}, "nbformat": 4,
           "nbformat_minor": 4}
    (tmp_path / "old.ipynb").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="old.ipynb: every cell needs an id"):
        load_labs(tmp_path)


def test_load_labs_rejects_a_lab_that_was_not_executed(tiny_labs):
    notebook = tiny_instructor()
    notebook.cells[5].outputs = []
    nbformat.write(notebook, tiny_labs / "02_raw.ipynb")
    assert list(load_labs(tiny_labs, [TINY])) == [TINY]
    with pytest.raises(ValueError, match="02_raw.ipynb, check cell cell-5: no stored output"):
        load_labs(tiny_labs)


def test_find_submissions_reads_both_layouts_and_says_what_it_ignored(tmp_path):
    root = tmp_path / "submissions"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / f"{TINY}.ipynb").write_text("{}")
    (root / "alice" / "notes.txt").write_text("")
    (root / "alice" / "99_unknown.ipynb").write_text("{}")
    (root / "alice" / ".ipynb_checkpoints").mkdir()
    (root / f"bob__{TINY}.ipynb").write_text("{}")
    (root / f"alice__{TINY}.ipynb").write_text("{}")
    (root / "carol").mkdir()
    (root / "stray.ipynb").write_text("{}")
    found, ignored = find_submissions(root, [TINY, "02_other"])
    assert found == [Submission("alice", TINY, root / "alice" / f"{TINY}.ipynb"),
                     Submission("bob", TINY, root / f"bob__{TINY}.ipynb"),
                     Submission("carol", TINY, None)]
    assert ignored == [
        f"{root / 'alice' / '99_unknown.ipynb'}: no lab named '99_unknown' "
        f"(labs: {TINY}, 02_other)",
        f"{root / 'alice' / 'notes.txt'}: not <student>/<lab>.ipynb or <student>__<lab>.ipynb",
        f"{root / f'alice__{TINY}.ipynb'}: a second submission of {TINY} by alice",
        f"{root / 'stray.ipynb'}: not <student>/<lab>.ipynb or <student>__<lab>.ipynb",
    ]


def test_find_submissions_rejects_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="submissions must be a folder"):
        find_submissions(tmp_path / "nowhere", [TINY])


@pytest.mark.parametrize(("content", "problem"), [
    (b"{ not json", "NotJSONError"),
    (b'{"hello": "world"}', ""),
    (b'{"cells": 3, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', ""),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "UnicodeDecodeError"),
])
def test_read_submission_rejects_what_is_not_a_notebook(tmp_path, content, problem):
    path = tmp_path / "bad.ipynb"
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match=f"not a readable notebook \\(.*{problem}"):
        read_submission(path)


def test_read_submission_rejects_a_huge_file(tmp_path, monkeypatch):
    monkeypatch.setattr("labkit.grading.submissions.MAX_SUBMISSION_BYTES", 10)
    path = tmp_path / "big.ipynb"
    path.write_text("x" * 11)
    with pytest.raises(SubmissionError, match="11 bytes, more than 10"):
        read_submission(path)


def test_read_submission_refuses_too_many_cells_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr("labkit.grading.submissions.MAX_CELLS", 3)
    path = tmp_path / "many.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("1") for _ in range(4)]), path)
    with pytest.raises(SubmissionError, match="4 cells, more than 3"):
        read_submission(path)


@pytest.mark.parametrize("kind", ["link", "fifo", "folder"])
def test_read_submission_refuses_links_fifos_and_folders_without_waiting(tmp_path, kind):
    path = tmp_path / "sub.ipynb"
    if kind == "link":
        path.symlink_to(LAB_00)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with pytest.raises(SubmissionError):
        read_submission(path)


def test_a_submission_that_links_to_the_instructor_notebook_is_ignored(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "00_baseline.ipynb").symlink_to(LAB_00)
    (tmp_path / "bob__00_baseline.ipynb").symlink_to(LAB_00)
    (tmp_path / "cy").symlink_to(LAB_00.parent)
    found, ignored = find_submissions(tmp_path, ["00_baseline"])
    assert found == []
    assert sorted(line.rpartition(": ")[2] for line in ignored) == [
        "a link, not a submitted file", "a link, not a submitted file or folder",
        "a link, not a submitted file or folder"]


def test_untrusted_reads_take_a_bounded_tail_and_refuse_links(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"a" * 100 + b"the end")
    assert read_text(log, 7, tail=True) == "the end"
    with pytest.raises(UntrustedFileError, match="more than 7"):
        read_text(log, 7)
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(UntrustedFileError, match="a link"):
        read_text(tmp_path / "zero", 10, tail=True)


def test_clean_text_strips_escapes_and_caps_with_a_note():
    assert clean_text("red\x1b[31m text\x07\r\n", 100) == "red text\n"
    assert clean_text("x" * 30, 10) == "xxxxxxxxxx [... 20 more characters cut]"


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\x1b[0m=cmd"])
def test_table_cells_that_a_spreadsheet_would_evaluate_are_escaped(text):
    assert safe_cell(text).startswith("'")
    assert safe_cell("a = 1") == "a = 1" and safe_cell(3) == 3


def test_hidden_seeds_are_stable_personal_and_secret(tmp_path):
    secret = seeds.course_secret(tmp_path)
    assert seeds.course_secret(tmp_path) == secret and len(secret) == 32
    assert stat.S_IMODE((tmp_path / seeds.SECRET_FILE).stat().st_mode) == 0o600
    ann = seeds.hidden_seed(secret, "ann", "00_baseline")
    assert ann == seeds.hidden_seed(secret, "ann", "00_baseline")
    assert ann != seeds.hidden_seed(secret, "bob", "00_baseline")
    assert ann != seeds.hidden_seed(secret, "ann", "01_granularity")
    (tmp_path / "other").mkdir()
    other = seeds.course_secret(tmp_path / "other")
    assert other != secret and seeds.hidden_seed(other, "ann", "00_baseline") != ann
    assert 0 <= ann < 2**31


def test_merge_takes_only_exercise_and_question_sources_by_cell_id():
    instructor = tiny_instructor()
    answers = {"cell-2": "def agp_sparsity(*a):\n    return 0.5", "cell-3": "print('I pass')",
               "cell-0": "import os", "cell-7": "It is linear."}
    merged, missing = merge(instructor, answers)
    assert missing == ["cell-4"]
    assert merged.cells[2].source == answers["cell-2"]
    assert (merged.cells[2].outputs, merged.cells[2].execution_count) == ([], None)
    assert merged.cells[4].source == release_notebook(instructor).cells[4].source
    assert merged.cells[7].source == "It is linear."
    for index in (0, 1, 6):
        assert merged.cells[index] == instructor.cells[index]
    for index, name in ((3, "agp_sparsity"), (5, "get_num_channels_to_keep")):
        assert merged.cells[index].source == instructor.cells[index].source
        assert merged.cells[index].outputs == [
            new_output("stream", name="stdout", text=f"{name}: results recorded\n")]
    assert instructor == tiny_instructor()


def test_question_answers_list_the_prompt_and_blank_a_placeholder():
    instructor = tiny_instructor()
    assert question_answers(instructor, {"cell-7": " It is linear.\n"}) == [
        Answer("cell-7", "Why does AGP prune fast early?", "It is linear.")]
    assert [a.answer for a in question_answers(instructor, {"cell-7": ANSWER_PLACEHOLDER})] == [""]
    assert [a.answer for a in question_answers(instructor, {})] == [""]
    instructor.cells[6].source = "## Question 3"
    assert question_answers(instructor, {})[0].prompt == "Question 3"


def test_review_notes_flag_exercise_code_that_reaches_for_the_checks():
    instructor = tiny_instructor()
    answers = {"cell-2": "import builtins\nchecks.check_agp_sparsity = print", "cell-4": "x = 3",
               "cell-0": "import importlib"}
    assert review_notes(instructor, answers) == [
        "review exercise cell cell-2: it uses checks, import builtins"]


@pytest.mark.parametrize("lab", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_shipped_labs_merge_their_released_and_solved_notebooks(tmp_path, lab):
    instructor = nbformat.read(lab, as_version=4)
    checks = check_cells(instructor, lab.name)
    code = [cell for cell in instructor.cells if cell.cell_type == "code"]
    assert checks and all(code[check.code_index].outputs for check in checks), \
        f"{lab.name} needs check cells, executed"
    nbformat.write(release_notebook(instructor), tmp_path / "released.ipynb")
    unanswered, missing = merge(instructor, read_submission(tmp_path / "released.ipynb"))
    assert missing == []
    solved, _ = merge(instructor, {cell.id: cell.source for cell in instructor.cells})
    for cell, blank, full in zip(instructor.cells, unanswered.cells, solved.cells, strict=True):
        graded_by_student = {"exercise", "question"} & set(cell.metadata.get("tags", []))
        assert full.source == cell.source
        assert (blank.source != cell.source) == bool(graded_by_student)
        if "check" in cell.metadata.get("tags", []):
            assert blank.source == cell.source == full.source
            assert blank.outputs[0]["text"].endswith(": results recorded\n")
        elif not graded_by_student:
            assert blank == cell == full


# --- reading nbval's report (no kernel) ---------------------------------------------


def junit(*cases: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
            + "".join(cases) + "</testsuite></testsuites>")


def case(number: int, inner: str = "") -> str:
    return f'<testcase classname="submission.ipynb" name="Cell {number}">{inner}</testcase>'


def failure(text: str) -> str:
    return f'<failure message="Notebook cell execution failed">{text}</failure>'


RAISED = ("Notebook cell execution failed\nCell 2: Cell execution caused an exception\n\n"
          "Input:\ncheck_agp_sparsity(double)\n\nTraceback:\n#x1B[31mValueError#x1B[39m: inner\n\n"
          "The above exception was the direct cause of the following exception:\n"
          "#x1B[31mCheckFailed#x1B[39m: double: case 'one' failed: expected 2, got 3\n")
TIMEOUT = "Notebook cell execution failed\nCell 1: Timeout of 8 seconds exceeded executing cell"
DEAD = ("Notebook cell execution failed\nCell 3: Timeout of 8 seconds exceeded while executing "
        "cell. Failed to interrupt kernel in 5 seconds, so failing without traceback.")
DIED = "Notebook cell execution failed\nRuntimeError: Kernel died while running the cell"
DIFFERS = ("Notebook cell execution failed\nCell 2: Cell outputs differ\n\nInput:\nx\n\n"
           "Traceback:\n mismatch 'stdout'\n\n  - hi\n    double: 2/2 cases passed\n")
XFAIL = '<skipped type="pytest.xfail" message="Previous cell timed out, expected cell to fail"/>'


def graded(report: str | None, timed_out: bool = False, returncode: int = 1) -> list[tuple]:
    instructor = tiny_instructor()
    run = NbvalRun(report, returncode, "INTERNALERROR> boom", "time" if timed_out else "")
    return [(r.check, r.passed, r.points, r.message)
            for r in score(instructor, check_cells(instructor), run, TINY_LIMITS)]


def test_score_reads_a_check_failure_and_a_pass():
    report = junit(case(0), case(1), case(2, failure(RAISED)), case(3), case(4))
    assert graded(report) == [
        ("check_agp_sparsity", False, 2, "double: case 'one' failed: expected 2, got 3"),
        ("check_get_num_channels_to_keep", True, 1, "")]


def test_score_says_when_a_check_prints_more_than_its_line():
    report = junit(case(0), case(1), case(2, failure(DIFFERS)), case(3), case(4))
    assert graded(report)[0][3] == ("the check's output differs from its expected line: "
                                    "mismatch 'stdout' - hi double: 2/2 cases passed")


def test_score_fails_every_check_after_a_timeout_even_if_nbval_ran_it():
    report = junit(case(0), case(1, failure(TIMEOUT)), case(2, XFAIL), case(3), case(4))
    stopped = "not run: in an earlier exercise cell (cell-2), timed out after 8 s"
    assert graded(report) == [("check_agp_sparsity", False, 2, stopped),
                              ("check_get_num_channels_to_keep", False, 1, stopped)]


def test_score_keeps_earlier_checks_when_the_kernel_dies_later():
    report = junit(case(0), case(1), case(2), case(3, failure(DEAD)), case(4, XFAIL))
    assert graded(report) == [
        ("check_agp_sparsity", True, 2, ""),
        ("check_get_num_channels_to_keep", False, 1,
         "not run: in an earlier exercise cell (cell-4), the kernel died or stopped responding "
         "(no reply within 8 s)")]


def test_score_says_the_kernel_died_in_the_cell_where_it_died():
    report = junit(case(0), case(1), case(2), case(3, failure(DIED)),
                   case(4, failure("RuntimeError: Kernel dead on test start")))
    assert graded(report)[1][3] == ("not run: in an earlier exercise cell (cell-4), the "
                                    "kernel died while running this cell")


def test_score_without_a_report_fails_every_check_with_the_reason():
    assert {row[3] for row in graded(None, timed_out=True)} == {
        "not run: the notebook ran past its total time limit of 300 s"}
    assert {row[3] for row in graded(None)} == {
        "not run: pytest exited with code 1: INTERNALERROR> boom"}
    assert graded(junit(case(0)))[0][3] == "not run (no result from nbval)"


def test_score_ignores_a_report_when_pytest_did_not_finish_normally():
    forged = junit(*(case(number) for number in range(5)))
    assert graded(forged, returncode=0) == [("check_agp_sparsity", True, 2, ""),
                                            ("check_get_num_channels_to_keep", True, 1, "")]
    for returncode in (-9, 2, 3):
        assert {row[1:] for row in graded(forged, returncode=returncode)} == {
            (False, 2, f"not run: pytest exited with code {returncode}: INTERNALERROR> boom"),
            (False, 1, f"not run: pytest exited with code {returncode}: INTERNALERROR> boom")}


# --- the tables -----------------------------------------------------------------------

HEADER = ("student", "lab", "check", "passed", "points", "earned", "message", "mode")


def test_score_asks_the_referee_about_every_check_nbval_passed():
    instructor = tiny_instructor()
    report = junit(case(0), case(1), case(2), case(3), case(4))
    run = NbvalRun(report, 1, "", "")
    asked = []

    def verdict(check):
        asked.append(check.name)
        return Verdict(check.name == "check_agp_sparsity", "wrong on hidden case 2")

    assert [(r.check, r.passed, r.message) for r in score(
        instructor, check_cells(instructor), run, TINY_LIMITS, verdict)] == [
        ("check_agp_sparsity", True, "wrong on hidden case 2"),
        ("check_get_num_channels_to_keep", False, "wrong on hidden case 2")]
    assert asked == ["check_agp_sparsity", "check_get_num_channels_to_keep"]


def test_score_names_the_disk_quota_when_a_run_was_stopped_for_it():
    instructor = tiny_instructor()
    run = NbvalRun(None, -9, "", "disk")
    assert {r.message for r in score(instructor, check_cells(instructor), run, TINY_LIMITS)} == {
        "not run: the submission stored more than its disk quota of 1024 MiB or 100,000 "
        "files"}


def test_write_tables_writes_three_csv_files_atomically_readable_by_the_group(tmp_path):
    out = tmp_path / "grades.csv"
    out.write_text("an older table")
    grades = [LabGrade("bo, jr", TINY, [CheckResult("check_agp_sparsity", True, 2),
                                        CheckResult("check_get_num_channels_to_keep", False, 1,
                                                    'say "x"')],
                       [Answer("cell-7", "Why does AGP prune fast early?", "line 1\nline 2")],
                       ["a note"], "process")]
    assert write_tables(grades, out) == table_paths(out)
    assert read_csv(out) == [
        HEADER,
        ("bo, jr", TINY, "check_agp_sparsity", "True", "2", "2", "", "process"),
        ("bo, jr", TINY, "check_get_num_channels_to_keep", "False", "1", "0", 'say "x"',
         "process")]
    assert read_csv(tmp_path / "grades-totals.csv") == [
        ("student", "lab", "earned", "points", "questions", "notes", "mode"),
        ("bo, jr", TINY, "2", "3", "1", "a note", "process"),
        ("bo, jr", ALL_LABS, "2", "3", "1", "", "process")]
    assert read_csv(tmp_path / "grades-questions.csv") == [
        ("student", "lab", "question", "prompt", "answer"),
        ("bo, jr", TINY, "cell-7", "Why does AGP prune fast early?", "line 1\nline 2")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grades-questions.csv", "grades-totals.csv", "grades.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in tmp_path.iterdir())


@pytest.mark.parametrize("jobs", [0, -2, 1.5, True])
def test_grade_rejects_a_bad_number_of_jobs(tmp_path, tiny_labs, jobs):
    with pytest.raises(ValueError, match="jobs must be an int >= 1"):
        grade(tmp_path, tiny_labs, tmp_path / "grades.csv", jobs=jobs)


def test_grade_checks_only_the_labs_that_were_submitted(tmp_path, tiny_labs):
    broken = tiny_instructor()
    broken.cells[2].source = "def agp_sparsity(*a):\n    return 0.0"
    nbformat.write(broken, tiny_labs / "02_broken.ipynb")
    root = tmp_path / "submissions"
    (root / "zed").mkdir(parents=True)
    assert grade(root, tiny_labs, tmp_path / "grades.csv") == ([], [])
    assert read_csv(tmp_path / "grades.csv") == [HEADER]
    (root / "ann__02_broken.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="02_broken.ipynb, cell 2 .*needs a"):
        grade(root, tiny_labs, tmp_path / "grades.csv")


def test_load_labs_refuses_a_check_cell_that_calls_no_known_check(tiny_labs):
    notebook = tiny_instructor()
    notebook.cells[3].source = "checks.check_everything(agp_sparsity)"
    nbformat.write(notebook, tiny_labs / "02_unknown.ipynb")
    with pytest.raises(ValueError, match="02_unknown.ipynb, check cell cell-3: it calls no known "
                                         "check"):
        load_labs(tiny_labs)


def test_cli_grade_reports_a_bad_limit(tmp_path, tiny_labs, capsys):
    out = tmp_path / "grades.csv"
    assert main(["grade", str(tmp_path), "--labs", str(tiny_labs), "--out", str(out),
                 "--cell-timeout", "0"]) == 1
    assert "cell_timeout_s must be a positive number, got 0.0" in capsys.readouterr().err
    assert not out.exists()


def test_bwrap_forced_without_bubblewrap_names_the_package_and_writes_nothing(
        tmp_path, tiny_labs, monkeypatch, capsys):
    monkeypatch.setattr("labkit.grading.sandbox.bwrap", lambda: None)
    sandbox.probe.cache_clear()
    out = tmp_path / "grades.csv"
    try:
        assert main(["grade", str(tmp_path), "--labs", str(tiny_labs), "--out", str(out),
                     "--isolation", "bwrap"]) == 1
    finally:
        sandbox.probe.cache_clear()
    assert "apt-get install bubblewrap" in capsys.readouterr().err
    assert not out.exists()


def test_without_bubblewrap_the_strongest_other_mode_is_chosen(monkeypatch):
    monkeypatch.setattr("labkit.grading.sandbox.bwrap", lambda: None)
    sandbox.probe.cache_clear()
    try:
        assert isolation.choose() in ("container", "process")
    finally:
        sandbox.probe.cache_clear()


def test_cli_process_isolation_warns_and_records_the_mode(tmp_path, tiny_labs, capsys):
    root = tmp_path / "submissions"
    root.mkdir()
    nbformat.write(student_copy(tiny_instructor(), **solutions(tiny_instructor())),
                   root / f"ann__{TINY}.ipynb")
    out = tmp_path / "grades.csv"
    assert main(["grade", str(root), "--labs", str(tiny_labs), "--out", str(out),
                 "--isolation", "process", "--jobs", "1"]) == 0
    captured = capsys.readouterr()
    assert "labkit grade: isolation process" in captured.out
    assert "WARNING: the process isolation" in captured.err
    assert {row[-1] for row in read_csv(out)[1:]} == {"process"}
    assert {row[5] for row in read_csv(out)[1:]} == {"2", "1"}


# --- grading the tiny lab in real sandboxes ------------------------------------------


def test_grade_tiny_lab_submissions_cell_by_cell(tmp_path, tiny_labs):
    instructor = tiny_instructor()
    solved = solutions(instructor)
    root = tmp_path / "submissions"
    for student in ("correct", "tampered", "looping", "dying", "vandal", "zed"):
        (root / student).mkdir(parents=True)

    def submit(path: Path, notebook) -> None:
        nbformat.write(notebook, path)

    submit(root / "correct" / f"{TINY}.ipynb",
           student_copy(instructor, **solved, cell_7="Most weights are redundant at first."))
    submit(root / f"wrong__{TINY}.ipynb", student_copy(instructor, **{
        **solved, "cell_2": "def agp_sparsity(t, n, s_initial, s_final):\n"
                            "    return s_initial + (s_final - s_initial) * t / n"}))
    tampered = student_copy(instructor, cell_3='print("agp_sparsity: results recorded")',
                            cell_5='print("get_num_channels_to_keep: results recorded")')
    for cell in tampered.cells[3], tampered.cells[5]:
        cell.metadata = {"tags": [], "points": 100}
        cell.outputs = instructor.cells[3].outputs
        cell.execution_count = 3
    submit(root / "tampered" / f"{TINY}.ipynb", tampered)
    submit(root / "looping" / f"{TINY}.ipynb",
           student_copy(instructor, **{**solved, "cell_2": "while True:\n    pass"}))
    submit(root / "dying" / f"{TINY}.ipynb",
           student_copy(instructor, **{**solved, "cell_4": "import os\nos._exit(1)"}))
    submit(root / "vandal" / f"{TINY}.ipynb", student_copy(instructor, **{
        **solved, "cell_2": "import os\nfor name in os.listdir('.'):\n    os.remove(name)\n"
                            + solved["cell_2"]}))
    missing = student_copy(instructor, **solved)
    del missing.cells[4]
    submit(root / f"partial__{TINY}.ipynb", missing)
    all_passed = junit(*(case(number) for number in range(5)))
    forge = ("import os\nwith open('../report/junit.xml', 'w') as report:\n"
             f"    report.write({all_passed!r})\nos.kill(os.getppid(), 9)")
    submit(root / f"forger__{TINY}.ipynb", student_copy(instructor, **{**solved, "cell_2": forge}))
    (root / f"broken__{TINY}.ipynb").write_text('{"cells": [')
    (root / f"picture__{TINY}.ipynb").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "zed" / "notes.txt").write_text("I forgot")
    before = {path: path.read_bytes() for path in [*root.rglob("*"), *tiny_labs.iterdir()]
              if path.is_file()}

    grades, ignored = grade(root, tiny_labs, tmp_path / "grades.csv", jobs=2,
                            config=GradingConfig(TINY_LIMITS))

    assert ignored == [f"{root / 'zed' / 'notes.txt'}: not <student>/<lab>.ipynb or "
                       "<student>__<lab>.ipynb"]
    unreadable = re.compile(r"unreadable submission: not a readable notebook \(.+\)")
    killed = re.compile(r"not run: pytest exited with code (-9|137): .*", re.DOTALL)
    looped = "not run: in an earlier exercise cell (cell-2), timed out after 8 s"
    died = "not run: in an earlier exercise cell (cell-4), the kernel died while running this cell"
    wrong = re.compile(r"agp_sparsity: case 't = 5 of 10' failed: .*|agp_sparsity: case "
                       r"'half way, t = 5 of 10' failed: expected 0.7875, got 0.45 .*")
    agp, keep = "check_agp_sparsity", "check_get_num_channels_to_keep"
    assert_rows(read_csv(tmp_path / "grades.csv"), [HEADER, *[
        (*row, "bwrap") for row in [
            ("broken", TINY, agp, "False", "2", "0", unreadable),
            ("broken", TINY, keep, "False", "1", "0", unreadable),
            ("correct", TINY, agp, "True", "2", "2", ""),
            ("correct", TINY, keep, "True", "1", "1", ""),
            ("dying", TINY, agp, "True", "2", "2", ""),
            ("dying", TINY, keep, "False", "1", "0", died),
            ("forger", TINY, agp, "False", "2", "0", killed),
            ("forger", TINY, keep, "False", "1", "0", killed),
            ("looping", TINY, agp, "False", "2", "0", looped),
            ("looping", TINY, keep, "False", "1", "0", looped),
            ("partial", TINY, agp, "True", "2", "2", ""),
            ("partial", TINY, keep, "False", "1", "0", "get_num_channels_to_keep: not "
                                                       "implemented yet"),
            ("picture", TINY, agp, "False", "2", "0", unreadable),
            ("picture", TINY, keep, "False", "1", "0", unreadable),
            ("tampered", TINY, agp, "False", "2", "0", "agp_sparsity: not implemented yet"),
            ("tampered", TINY, keep, "False", "1", "0", "get_num_channels_to_keep: not "
                                                        "implemented yet"),
            ("vandal", TINY, agp, "True", "2", "2", ""),
            ("vandal", TINY, keep, "True", "1", "1", ""),
            ("wrong", TINY, agp, "False", "2", "0", wrong),
            ("wrong", TINY, keep, "True", "1", "1", ""),
            ("zed", TINY, agp, "False", "2", "0", "not submitted"),
            ("zed", TINY, keep, "False", "1", "0", "not submitted"),
        ]]])
    totals = {(row[0], row[1]): row[2:] for row in read_csv(tmp_path / "grades-totals.csv")}
    assert totals["correct", TINY] == ("3", "3", "1", "", "bwrap")
    assert totals["correct", ALL_LABS] == ("3", "3", "1", "", "bwrap")
    assert totals["partial", TINY] == (
        "2", "3", "1", "cells missing from the submission (unanswered): cell-4", "bwrap")
    assert totals["zed", TINY] == ("0", "3", "0", "not submitted", "bwrap")
    assert unreadable.fullmatch(totals["broken", TINY][3])
    answers = read_csv(tmp_path / "grades-questions.csv")
    asked = "Why does AGP prune fast early?"
    assert ("correct", TINY, "cell-7", asked, "Most weights are redundant at first.") in answers
    assert ("wrong", TINY, "cell-7", asked, "") in answers
    assert len(grades) == 11
    assert {path: path.read_bytes() for path in before} == before


# --- the shipped lab 00, end to end through the command line ---------------------------


def test_grade_lab_00_end_to_end_through_the_command_line(tmp_path, capsys):
    instructor = nbformat.read(LAB_00, as_version=4)
    checks = check_cells(instructor)
    assert [c.name for c in checks][:2] == ["check_get_sparsity", "check_get_model_size"]
    exercises = [c for c in instructor.cells if "exercise" in c.metadata.get("tags", [])]
    sparsity, size = (cell.id for cell in exercises[:2])
    released = release_notebook(instructor)

    def submission(**sources: str) -> nbformat.NotebookNode:
        notebook = nbformat.from_dict(json.loads(nbformat.writes(released)))
        for cell in notebook.cells:
            cell.source = sources.get(cell.id, cell.source)
        return notebook

    solved = {cell.id: cell.source for cell in exercises}
    root = tmp_path / "submissions"
    root.mkdir()
    nbformat.write(submission(**solved), root / "correct__00_baseline.ipynb")
    nbformat.write(submission(**{**solved, sparsity: (
        "def get_sparsity(tensor):\n    return tensor.count_nonzero().item() / tensor.numel()")}),
        root / "wrong__00_baseline.ipynb")
    nbformat.write(submission(**{**solved, size: "while True:\n    pass"}),
                   root / "looping__00_baseline.ipynb")
    (root / "picture__00_baseline.ipynb").write_bytes(b"%PDF-1.4\n")
    out = tmp_path / "grades.csv"

    assert main(["grade", str(root), "--labs", str(LAB_00.parent), "--out", str(out),
                 "--jobs", "2", "--cell-timeout", "30", "--timeout", "400", "--seed", "1"]) == 0

    assert zoo.cache_path("vgg-digits").exists()
    assert "graded in" in capsys.readouterr().out
    rows = {(row[0], row[2]): row for row in read_csv(out)[1:]}
    assert {row[7] for row in rows.values()} == {"bwrap"}
    assert all(row[3] == "True" for (student, _), row in rows.items() if student == "correct")
    assert rows["wrong", "check_get_sparsity"][3:6] == ("False", "1", "0")
    assert rows["wrong", "check_get_sparsity"][6].startswith(
        "get_sparsity: case 'all non-zero' failed: expected 0.0, got 1.0")
    assert rows["wrong", "check_get_model_size"][3] == "True"
    assert rows["looping", "check_get_sparsity"][3] == "True"
    assert rows["looping", "check_get_model_size"][6] == (
        f"not run: in an earlier exercise cell ({size}), timed out after 30 s")
    assert {row[6] for (student, _), row in rows.items() if student == "picture"} == {
        next(row[6] for (s, _), row in rows.items() if s == "picture")}
