"""Every lab notebook follows the cell conventions that grading and the book rely on."""

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "labs").glob("*.ipynb"))
CHECK_LINE = re.compile(r"^[\w.]+: (\d+)/\1 cases passed\n$")


def tagged(notebook, tag):
    return [c for c in notebook.cells if tag in c.metadata.get("tags", [])]


@pytest.fixture(params=LABS, ids=[p.stem for p in LABS])
def lab(request):
    return nbformat.read(request.param, as_version=4)


def test_there_are_labs():
    assert LABS


def test_code_cells_are_executed(lab):
    unexecuted = [c.id for c in lab.cells
                  if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
    assert not unexecuted


def test_cell_ids_are_unique(lab):
    ids = [c.id for c in lab.cells]
    assert len(ids) == len(set(ids))


def test_exercises_hold_marked_solutions_and_fold_in_the_book(lab):
    exercises = tagged(lab, "exercise")
    assert exercises
    for cell in exercises:
        assert cell.cell_type == "code"
        lines = [line.strip() for line in cell.source.splitlines()]
        begins, ends = lines.count("### BEGIN SOLUTION"), lines.count("### END SOLUTION")
        assert begins == ends >= 1, cell.id
        assert "hide-input" in cell.metadata["tags"], cell.id


def test_checks_are_compared_and_passed(lab):
    checks = tagged(lab, "check")
    assert checks
    for cell in checks:
        assert "nbval-check-output" in cell.metadata["tags"], cell.id
        assert cell.cell_type == "code"
        streams = [o for o in cell.outputs if o.output_type == "stream"]
        assert len(cell.outputs) == 1 and len(streams) == 1, cell.id
        assert CHECK_LINE.match(streams[0].text), streams[0].text
        assert isinstance(cell.metadata.get("points", 1), int)


def test_questions_are_markdown_answers(lab):
    for cell in tagged(lab, "question"):
        assert cell.cell_type == "markdown" and cell.source.strip(), cell.id


def test_every_lab_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    entries = set(re.findall(r"file:\s*(\S+)", toc))
    assert {f"labs/{p.stem}" for p in LABS} <= entries
    assert yaml.safe_load(toc)["format"] == "jb-book"
