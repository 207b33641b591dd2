"""Every lab notebook follows the cell conventions that grading and the book rely on."""

import re

import nbformat
import pytest
import yaml

from tests.support.paths import NOTEBOOKS, ROOT

CHECK_LINE = re.compile(r"^[\w.]+: (\d+)/\1 cases passed\n$")


def tagged(notebook, tag):
    return [c for c in notebook.cells if tag in c.metadata.get("tags", [])]


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def lab_file(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_there_are_labs():
    assert NOTEBOOKS


def test_code_cells_are_executed(lab_file):
    path, lab = lab_file
    unexecuted = [c.id for c in lab.cells
                  if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
    assert not unexecuted, f"{path.stem}: cells {unexecuted} were not executed"


def test_cell_ids_are_unique(lab_file):
    path, lab = lab_file
    ids = [c.id for c in lab.cells]
    assert len(ids) == len(set(ids)), f"{path.stem}: repeated cell ids"


def test_exercises_hold_marked_solutions_and_fold_in_the_book(lab_file):
    path, lab = lab_file
    exercises = tagged(lab, "exercise")
    assert exercises, f"{path.stem}: no exercise cell"
    for cell in exercises:
        assert cell.cell_type == "code"
        lines = [line.strip() for line in cell.source.splitlines()]
        begins, ends = lines.count("### BEGIN SOLUTION"), lines.count("### END SOLUTION")
        assert begins == ends >= 1, where(path, cell)
        assert "hide-input" in cell.metadata["tags"], where(path, cell)


def test_checks_are_compared_and_passed(lab_file):
    path, lab = lab_file
    checks = tagged(lab, "check")
    assert checks, f"{path.stem}: no check cell"
    for cell in checks:
        assert "nbval-check-output" in cell.metadata["tags"], where(path, cell)
        assert cell.cell_type == "code"
        streams = [o for o in cell.outputs if o.output_type == "stream"]
        assert len(cell.outputs) == 1 and len(streams) == 1, where(path, cell)
        assert CHECK_LINE.match(streams[0].text), f"{where(path, cell)}: {streams[0].text!r}"


def test_questions_are_markdown_answers(lab_file):
    path, lab = lab_file
    for cell in tagged(lab, "question"):
        assert cell.cell_type == "markdown" and cell.source.strip(), where(path, cell)


def test_every_lab_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    entries = set(re.findall(r"file:\s*(\S+)", toc))
    assert {f"labs/{p.stem}" for p in NOTEBOOKS} <= entries
    assert yaml.safe_load(toc)["format"] == "jb-book"


# --- what every lab grades --------------------------------------------------------------
# A lab grades at least two exercises, each followed by its check cell, and at least two
# questions. Every check and question cell carries integer ``points`` in its metadata; the
# first cell states the total as "**Grading: N points.**" and says what is graded by hand.

TOTAL = re.compile(r"\*\*Grading: (\d+) points\.?\*\*")
CHECK_CALL = re.compile(r"\bchecks\.(check_\w+)\(")


def where(path, cell):
    return f"{path.stem}, cell {cell.id}"


def check_name(cell):
    called = CHECK_CALL.findall(cell.source)
    return called[0] if len(called) == 1 else None


def exercise_of(notebook, check_cell):
    """The exercise cell a check cell checks: the nearest exercise cell above it."""
    position = notebook.cells.index(check_cell)
    above = [c for c in notebook.cells[:position] if "exercise" in c.metadata.get("tags", [])]
    return above[-1] if above else None


def exercise_text(notebook, exercise):
    """The exercise cell's source and the markdown cell just above it."""
    position = notebook.cells.index(exercise)
    markdown = [c for c in notebook.cells[:position] if c.cell_type == "markdown"]
    return exercise.source + "\n" + (markdown[-1].source if markdown else "")


def test_every_check_cell_calls_one_registered_check(lab_file):
    from labkit.grading.checks import CHECKS

    path, notebook = lab_file
    for cell in tagged(notebook, "check"):
        name = check_name(cell)
        assert name, f"{where(path, cell)}: a check cell calls exactly one checks.check_<name>"
        assert name in CHECKS, f"{where(path, cell)}: {name} is not a registered check"


def test_at_least_two_checked_exercises(lab_file):
    path, notebook = lab_file
    checked = {exercise_of(notebook, cell).id for cell in tagged(notebook, "check")
               if exercise_of(notebook, cell) is not None}
    assert len(checked) >= 2, (f"{path.stem}: {len(checked)} exercise(s) with a check cell "
                               f"after them ({sorted(checked)}); at least 2 are required")


def test_at_least_two_questions(lab_file):
    path, notebook = lab_file
    questions = [c.id for c in tagged(notebook, "question")]
    assert len(questions) >= 2, f"{path.stem}: questions {questions}; at least 2 are required"


def test_points_are_integers_and_the_first_cell_states_their_total(lab_file):
    path, notebook = lab_file
    graded = tagged(notebook, "check") + tagged(notebook, "question")
    for cell in graded:
        points = cell.metadata.get("points")
        assert type(points) is int and points > 0, (
            f"{where(path, cell)}: metadata 'points' must be a positive int, got {points!r}")
    total = sum(cell.metadata["points"] for cell in graded)
    first = notebook.cells[0]
    stated = TOTAL.findall(first.source) if first.cell_type == "markdown" else []
    assert stated, f"{where(path, first)}: the first cell must state '**Grading: {total} points.**'"
    assert int(stated[0]) == total, (f"{where(path, first)}: states {stated[0]} points, the "
                                     f"check and question cells hold {total}")
    assert "by hand" in first.source, (f"{where(path, first)}: the first cell must say what "
                                       "is graded by hand")


def test_conventions_are_stated_in_the_exercise_text(lab_file):
    from labkit.grading.checks import CHECKS

    path, notebook = lab_file
    for cell in tagged(notebook, "check"):
        name, exercise = check_name(cell), exercise_of(notebook, cell)
        if name not in CHECKS or exercise is None:
            continue
        text = exercise_text(notebook, exercise)
        missing = [phrase for phrase in CHECKS[name].conventions if phrase not in text]
        assert not missing, (f"{where(path, exercise)}: the exercise checked by {name} must "
                             f"state {missing} (in the cell or the markdown cell above it)")


def test_execution_counts_increase_top_to_bottom(lab_file):
    path, notebook = lab_file
    previous = 0
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell.execution_count is None:
            continue
        assert cell.execution_count > previous, (
            f"{where(path, cell)}: execution count {cell.execution_count} after {previous}; "
            "execute the lab top to bottom")
        previous = cell.execution_count


def test_no_doc_roles_in_markdown(lab_file):
    path, notebook = lab_file
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            assert "{doc}" not in cell.source, (
                f"{where(path, cell)}: {{doc}} shows as raw text in JupyterLab; use a relative "
                "markdown link such as [the chapter](../book/granularity.md)")


MAX_CODE_LINES = 100


def test_labs_show_the_idea_not_the_plumbing(lab_file):
    """Plots and tables live in labkit.viz: outside its exercises and its install cell a
    lab holds at most MAX_CODE_LINES lines of code (blank and comment lines not counted)."""
    path, notebook = lab_file
    lines = [line for cell in notebook.cells
             if cell.cell_type == "code"
             and not {"exercise", "install"} & set(cell.metadata.get("tags", []))
             for line in cell.source.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= MAX_CODE_LINES, (
        f"{path.name}: {len(lines)} lines of code outside its exercises, more than "
        f"{MAX_CODE_LINES}; move plotting and tables into labkit.viz")


def test_the_first_code_cell_installs_the_course_version_where_labkit_is_missing(lab_file):
    """A lab opened on Colab from the book's launch button has no labkit until it runs:
    its first cell installs this version's wheel from the course site of _config.yml."""
    from labkit import __version__
    from labkit.grading.release import course_site, install_source, wheel_name

    path, notebook = lab_file
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first.metadata.get("tags") == ["install"], f"{path.name}: first code cell {first.id}"
    assert not first.outputs
    site = course_site(ROOT / "_config.yml")
    assert first.source == install_source(site), (
        f"{path.name}: the install cell is not the one _config.yml gives; run "
        "`python book/publish.py install-cells`")
    assert f"{site}course/" in first.source and wheel_name(__version__) in first.source
    assert max(len(line) for line in first.source.splitlines()) <= 88


COLUMN = 88


def test_code_and_printed_lines_fit_the_book_column(lab_file):
    """The site shows a lab's code and printed text at 88 characters without a
    horizontal scroll bar."""
    path, notebook = lab_file
    long = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        texts = [cell.source] + [output.get("text", "") for output in cell.outputs
                                 if output.output_type == "stream"]
        long += [f"{cell.id}: {line[:60]}" for text in texts for line in text.splitlines()
                 if len(line) > COLUMN]
    assert not long, f"{path.name}: lines over {COLUMN} characters {long}"
