"""Release: solutions out, placeholders in, everything else kept."""

from pathlib import Path

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from labkit.cli import main
from labkit.grading.release import (
    ANSWER_PLACEHOLDER,
    BEGIN_SOLUTION,
    END_SOLUTION,
    ReleaseError,
    live_only,
    release_folder,
    release_notebook,
    strip_solutions,
)
from tests.support.paths import NOTEBOOKS

EXERCISE = f"""def double(x):
    \"\"\"Twice x.\"\"\"
    {BEGIN_SOLUTION}
    y = 2 * x
    return y
    {END_SOLUTION}"""


def instructor_notebook() -> nbformat.NotebookNode:
    executed = new_code_cell("print('hello')", execution_count=1,
                             outputs=[new_output("stream", name="stdout", text="hello\n")])
    exercise = new_code_cell(EXERCISE, metadata={"tags": ["exercise"]}, execution_count=2,
                             outputs=[new_output("stream", name="stdout", text="solved\n")])
    check = new_code_cell("check_double(double)", execution_count=3,
                          metadata={"tags": ["check", "nbval-check-output"], "points": 2},
                          outputs=[new_output("stream", name="stdout", text="ok\n")])
    return new_notebook(cells=[
        new_markdown_cell("# Lab"), executed, exercise, check,
        new_markdown_cell("Why?"),
        new_markdown_cell("Because.", metadata={"tags": ["question"]}),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"},
                 "labkit": {"lab": 1}})


def test_strip_solutions_keeps_the_signature_and_indents_the_placeholder():
    assert strip_solutions(EXERCISE) == (
        'def double(x):\n    """Twice x."""\n'
        "    # YOUR CODE HERE\n    raise NotImplementedError()"
    )


def test_strip_solutions_replaces_every_block_at_its_own_indentation():
    source = (f"{BEGIN_SOLUTION}\na = 1\n{END_SOLUTION}\n"
              f"def f():\n        {BEGIN_SOLUTION}\n        return a\n        {END_SOLUTION}\n")
    assert strip_solutions(source) == (
        "# YOUR CODE HERE\nraise NotImplementedError()\ndef f():\n"
        "        # YOUR CODE HERE\n        raise NotImplementedError()\n"
    )


@given(before=st.lists(st.text("abc =()1", min_size=1), max_size=4),
       solution=st.lists(st.text("xyz +1", min_size=1), max_size=4),
       after=st.lists(st.text("abc =()1", min_size=1), max_size=4),
       indent=st.sampled_from(["", "    ", "\t"]))
def test_strip_solutions_keeps_every_line_outside_the_markers(before, solution, after, indent):
    source = "\n".join([*before, indent + BEGIN_SOLUTION, *solution, indent + END_SOLUTION,
                        *after])
    placeholder = [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
    assert strip_solutions(source).split("\n") == [*before, *placeholder, *after]


@pytest.mark.parametrize(("source", "problem"), [
    ("def f():\n    return 1", "needs a '### BEGIN SOLUTION' block"),
    (f"{BEGIN_SOLUTION}\nx = 1", "opened but never closed"),
    (f"x = 1\n{END_SOLUTION}", "line 2 closes a solution never opened"),
    (f"{BEGIN_SOLUTION}\n{BEGIN_SOLUTION}\n{END_SOLUTION}", "line 2 opens a solution inside"),
])
def test_strip_solutions_rejects_unpaired_markers_naming_the_cell(source, problem):
    with pytest.raises(ReleaseError, match=f"lab.ipynb, cell 3: .*{problem}"):
        strip_solutions(source, "lab.ipynb, cell 3")


def test_release_notebook_replaces_solutions_answers_and_clears_their_outputs():
    instructor = instructor_notebook()
    released = release_notebook(instructor)
    _, executed, exercise, check, prompt, question = released.cells
    assert "y = 2 * x" not in exercise.source and "raise NotImplementedError()" in exercise.source
    assert (exercise.outputs, exercise.execution_count) == ([], None)
    assert (check.outputs, check.execution_count) == ([], None)
    assert check.source == "check_double(double)" and check.metadata["points"] == 2
    assert question.source == ANSWER_PLACEHOLDER
    assert executed == instructor.cells[1] and prompt == instructor.cells[4]
    assert [c.id for c in released.cells] == [c.id for c in instructor.cells]
    assert [c.metadata for c in released.cells] == [c.metadata for c in instructor.cells]
    assert released.metadata == instructor.metadata


def test_release_notebook_does_not_change_its_input():
    instructor = instructor_notebook()
    before = nbformat.writes(instructor)
    release_notebook(instructor)
    assert nbformat.writes(instructor) == before


def test_release_notebook_refuses_markers_outside_exercise_cells():
    notebook = instructor_notebook()
    notebook.cells[1].source = f"{BEGIN_SOLUTION}\nsecret = 42\n{END_SOLUTION}"
    with pytest.raises(ReleaseError, match=r"lab.ipynb, cell 1 .*not tagged 'exercise'"):
        release_notebook(notebook, "lab.ipynb")


def test_release_notebook_refuses_an_exercise_without_markers():
    notebook = instructor_notebook()
    notebook.cells[2].source = "def double(x):\n    return 2 * x"
    with pytest.raises(ReleaseError, match=r"lab.ipynb, cell 2 \(id .*\): an exercise cell needs"):
        release_notebook(notebook, "lab.ipynb")


def test_release_notebook_refuses_an_exercise_that_is_markdown():
    notebook = instructor_notebook()
    notebook.cells[0].metadata["tags"] = ["exercise"]
    with pytest.raises(ReleaseError, match="cell 0 .*must be a code cell"):
        release_notebook(notebook)


def write_labs(folder: Path) -> Path:
    folder.mkdir()
    nbformat.write(instructor_notebook(), folder / "01_first.ipynb")
    nbformat.write(instructor_notebook(), folder / "02_second.ipynb")
    return folder


def test_release_folder_writes_one_student_notebook_per_lab(tmp_path):
    labs = write_labs(tmp_path / "labs")
    before = {path: path.read_bytes() for path in labs.iterdir()}
    written = release_folder(labs, tmp_path / "student")
    assert written == [tmp_path / "student" / "01_first.ipynb",
                       tmp_path / "student" / "02_second.ipynb"]
    released = nbformat.read(written[0], as_version=4)
    expected = release_notebook(nbformat.read(labs / "01_first.ipynb", as_version=4))
    assert nbformat.writes(released) == nbformat.writes(expected)
    assert {path: path.read_bytes() for path in labs.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == [p.name for p in written]


def test_release_folder_refuses_a_non_empty_folder_unless_forced(tmp_path):
    labs = write_labs(tmp_path / "labs")
    out = tmp_path / "student"
    out.mkdir()
    (out / "01_first.ipynb").write_text("a student's work")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not empty; pass force=True"):
        release_folder(labs, out)
    assert (out / "01_first.ipynb").read_text() == "a student's work"
    release_folder(labs, out, force=True)
    assert nbformat.read(out / "01_first.ipynb", as_version=4).cells[5].source == \
        ANSWER_PLACEHOLDER
    assert (out / "notes.txt").read_text() == "keep me"


def test_release_folder_writes_nothing_when_one_lab_is_broken(tmp_path):
    labs = write_labs(tmp_path / "labs")
    broken = instructor_notebook()
    broken.cells[2].source = f"{BEGIN_SOLUTION}\nx = 1"
    nbformat.write(broken, labs / "03_broken.ipynb")
    with pytest.raises(ReleaseError, match="03_broken.ipynb, cell 2"):
        release_folder(labs, tmp_path / "student")
    assert not (tmp_path / "student").exists()


@pytest.mark.parametrize(("labs", "out", "problem"), [
    ("missing", "student", "labs must be a folder"),
    ("empty", "student", "labs must hold at least one .ipynb"),
    ("labs", "labs", "out must differ from labs"),
    ("labs", "file.txt", "out must be a folder"),
])
def test_release_folder_rejects_bad_folders(tmp_path, labs, out, problem):
    write_labs(tmp_path / "labs")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(ValueError, match=problem):
        release_folder(tmp_path / labs, tmp_path / out)


def test_cli_release_writes_and_then_refuses_without_force(tmp_path, capsys):
    labs = write_labs(tmp_path / "labs")
    out = tmp_path / "student"
    assert main(["release", str(labs), "--out", str(out)]) == 0
    assert f"released {out / '01_first.ipynb'}" in capsys.readouterr().out
    assert main(["release", str(labs), "--out", str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["release", str(labs), "--out", str(out), "--force"]) == 0


@pytest.mark.parametrize("lab", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_shipped_labs_release_without_a_trace_of_their_solutions(lab):
    instructor = nbformat.read(lab, as_version=4)
    released = release_notebook(instructor, lab.name)
    text = nbformat.writes(released)
    assert BEGIN_SOLUTION not in text and END_SOLUTION not in text
    assert [c.id for c in released.cells] == [c.id for c in instructor.cells]
    exercises = [c for c in released.cells if "exercise" in c.metadata.get("tags", [])]
    assert exercises and all("raise NotImplementedError()" in c.source for c in exercises)
    for before, after in zip(instructor.cells, released.cells, strict=True):
        if "question" in before.metadata.get("tags", []):
            assert after.source == ANSWER_PLACEHOLDER


def test_release_clears_widget_views_progress_bars_and_solution_outputs():
    setup = new_code_cell("import math", execution_count=1,
                          outputs=[new_output("stream", name="stdout", text="kept\n")])
    exercise = new_code_cell(EXERCISE, metadata={"tags": ["exercise"]}, execution_count=2)
    uses = new_code_cell("value = double(2)\nprint(value)", execution_count=3,
                         outputs=[new_output("stream", name="stdout", text="4\n")])
    downstream = new_code_cell("print(value + 1)", execution_count=4,
                               outputs=[new_output("stream", name="stdout", text="5\n")])
    figure = new_code_cell("plot()", execution_count=5, outputs=[
        new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})])
    widget = new_code_cell("slider()", execution_count=6, outputs=[
        new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
            "text/plain": "interactive(children=(FloatSlider(value=0.5),))"}),
        new_output("stream", name="stderr", text=" 40%|####      | 4/10 [00:01<00:02]\n")])
    notebook = new_notebook(cells=[setup, exercise, uses, downstream, figure, widget],
                            metadata={"widgets": {"state": {}}})
    released = release_notebook(notebook)
    assert [len(cell.outputs) for cell in released.cells] == [1, 0, 0, 0, 1, 0]
    assert released.cells[2].execution_count is None
    assert "widgets" not in released.metadata


@pytest.mark.parametrize("lab", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_shipped_labs_release_no_output_a_student_should_not_see(lab):
    released = release_notebook(nbformat.read(lab, as_version=4))
    assert not any(live_only(output) for cell in released.cells if cell.cell_type == "code"
                   for output in cell.outputs)


def traced_notebook(*sources: str) -> nbformat.NotebookNode:
    """A notebook of the exercise cell and then one executed code cell per source."""
    exercise = new_code_cell(f"LIMIT = 3\n\n\n{EXERCISE}", metadata={"tags": ["exercise"]})
    cells = [new_code_cell(source, execution_count=number, outputs=[
        new_output("stream", name="stdout", text=f"{number}\n")])
        for number, source in enumerate(sources, start=1)]
    return new_notebook(cells=[exercise, *cells])


def cleared(notebook: nbformat.NotebookNode) -> list[int]:
    released = release_notebook(notebook)
    return [index for index, cell in enumerate(released.cells)
            if cell.cell_type == "code" and not cell.outputs and "exercise" not in
            cell.metadata.get("tags", [])]


def test_release_traces_by_scope_not_by_name():
    notebook = traced_notebook(
        "def f(model):\n    value = model\n    return value\nprint(f(1))",  # a local
        "for value in range(2):\n    print(value)",  # a loop variable
        "print(value)",  # the loop's value, not the student's
        "with open('x') as handle:\n    doubled = double(2)",  # derived from the exercise
        "print(doubled + LIMIT)",  # derived through a name
        "doubled = 1\nprint(doubled)",  # rebound from other values
        "print(LIMIT)",  # a constant the exercise cell gives, not the student's
        "for item in [doubled]:\n    total = double(item)\nprint(item)",
    )
    assert cleared(notebook) == [4, 5, 8]


def test_student_names_are_the_top_level_names_a_solution_binds():
    from labkit.grading.release import student_names

    source = (f"LIMIT = 3\n\n\n{EXERCISE}\n\n{BEGIN_SOLUTION}\nfor name in 'ab':\n"
              f"    total = name\nanswer = 1\n{END_SOLUTION}\n")
    assert student_names(source) == {"double", "total", "answer"}


CLEARED_BY_LAB = {
    "00_baseline": {"5eb371bf"},
    "01_granularity": {"g01-ties-demo", "g01-nm-conv0-demo"},
    "02_criteria": set(),
    "03_neuron_pruning": {"l03-sorted", "l03-cost", "l03-regression-acc", "l03-finetune",
                          "l03-slider"},
    "03b_residual_pruning": {"l03b-traced", "l03b-sorting"},
    "04_sensitivity": {"l04-scan", "l04-hand", "l04-allocator", "l04-finetune"},
    "05_auto_pruning": {"a5-rule", "a5-challenge-show"},
    "06_finetune_loop": set(),
    "07_hardware_eie": {"c4365e1e", "b210565b"},
    "07b_hardware_nm_sparseconv": {"a9c425f1", "44d88c8e", "273a7266"},
    "08_llm_pruning": {"l08-wanda-overlap", "l08-obs-demo-code"},
}
"""Per lab, the code cells (other than exercises and checks) with stored outputs that
call an exercise's function, directly or through names bound to its results: read
from each cell's code."""

SHOWN_IN_THE_STUDENT_EDITION = {
    "00_baseline": {"571800b6", "571800b6-table", "2a23c699"},
    "01_granularity": {"g01-curves-code", "g01-slider-code"},
    "03_neuron_pruning": {"l03-regression"},
    "04_sensitivity": {"l04-scan-plot", "l04-sizes", "l04-sizes-table"},
    "07_hardware_eie": {"80a38400"},
    "07b_hardware_nm_sparseconv": {"l07b-timing-plot"},
    "08_llm_pruning": {"l08-slider", "l08-calibration"},
}
"""Figures and tables drawn from labkit alone, which the student edition shows."""


@pytest.mark.parametrize("lab", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_release_clears_exactly_the_cells_that_use_the_students_results(lab):
    instructor = nbformat.read(lab, as_version=4)
    released = release_notebook(instructor, lab.name)
    gone = {before.id for before, after in zip(instructor.cells, released.cells, strict=True)
            if before.cell_type == "code" and before.outputs and not after.outputs
            and not {"exercise", "check"} & set(before.metadata.get("tags", []))
            and not all(live_only(output) for output in before.outputs)}
    assert gone == CLEARED_BY_LAB[lab.stem]
    shown = {cell.id for cell in released.cells if cell.cell_type == "code" and any(
        "image/png" in output.get("data", {}) or "text/html" in output.get("data", {})
        for output in cell.outputs)}
    assert SHOWN_IN_THE_STUDENT_EDITION.get(lab.stem, set()) <= shown


def test_course_site_reads_the_one_url_of_the_book_config(tmp_path):
    from labkit.grading.release import course_site

    config = tmp_path / "_config.yml"
    config.write_text("html:\n  baseurl: https://school.example/pruning\n")
    assert course_site(config) == "https://school.example/pruning/"


@pytest.mark.parametrize("text", ["title: no site\n", "html:\n  baseurl: ''\n",
                                  "html:\n  baseurl: ftp://x/\n", "html:\n  baseurl: [1]\n"])
def test_course_site_rejects_a_missing_or_non_http_url_naming_the_key(tmp_path, text):
    from labkit.grading.release import course_site

    config = tmp_path / "_config.yml"
    config.write_text(text)
    with pytest.raises(ValueError, match="html.baseurl .* must be the course's http"):
        course_site(config)


def test_install_source_pins_the_version_keeps_torch_and_stops_on_failure():
    from labkit.grading.release import install_source

    source = install_source("https://school.example/c/", "9.8.7")
    compile(source, "<install>", "exec")
    assert 'COURSE = "https://school.example/c/course/"' in source
    assert "pruning-workbook @ {COURSE}pruning_workbook-9.8.7-py3-none-any.whl" in source
    assert "torch==" in source and "https://download.pytorch.org/whl/cpu" in source
    assert source.count("raise RuntimeError") == 2


def test_release_folder_writes_the_install_cell_of_the_book_config(tmp_path):
    from labkit.grading.release import install_cell, install_source

    labs = tmp_path / "labs"
    labs.mkdir()
    notebook = instructor_notebook()
    notebook.cells.insert(0, new_code_cell("%pip install old", metadata={"tags": ["install"]}))
    nbformat.write(notebook, labs / "01_lab.ipynb")
    (tmp_path / "_config.yml").write_text("html:\n  baseurl: https://school.example/c\n")
    [path] = release_folder(labs, tmp_path / "out")
    released = nbformat.read(path, as_version=4)
    assert install_cell(released).source == install_source("https://school.example/c/")
    assert nbformat.read(labs / "01_lab.ipynb", as_version=4).cells[0].source == "%pip install old"


def test_write_install_cells_changes_only_the_stale_install_cells(tmp_path):
    from labkit.grading.release import install_cell, install_source, write_install_cells

    labs = tmp_path / "labs"
    labs.mkdir()
    config = tmp_path / "_config.yml"
    config.write_text("html:\n  baseurl: https://school.example/c/\n")
    stale = instructor_notebook()
    stale.cells.insert(0, new_code_cell("%pip install old", metadata={"tags": ["install"]}))
    nbformat.write(stale, labs / "01_stale.ipynb")
    nbformat.write(instructor_notebook(), labs / "02_none.ipynb")
    before = (labs / "02_none.ipynb").read_bytes()
    assert write_install_cells(labs, config) == [labs / "01_stale.ipynb"]
    rewritten = nbformat.read(labs / "01_stale.ipynb", as_version=4)
    assert install_cell(rewritten).source == install_source("https://school.example/c/")
    assert [c.id for c in rewritten.cells] == [c.id for c in stale.cells]
    assert (labs / "02_none.ipynb").read_bytes() == before
    assert write_install_cells(labs, config) == []
