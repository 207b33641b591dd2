"""Submissions: find them, read them as untrusted files, merge them into the instructor's.

A student cannot be trusted with the checks, so a submission is never run as it is.
The grader builds a *merged* notebook: the instructor notebook where only the
``exercise`` and ``question`` cells take the source of the student's cell of the same
cell id (a missing id counts as unanswered, that is, the released placeholder). Editing
a check cell or its stored output in a submission therefore changes nothing.

A submitted file is read as untrusted input: a link (to the instructor's notebook, to a
host file) or anything but a regular file is refused, and so are files past a size or a
cell-count bound, before the file is parsed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from labkit.grading import inspection
from labkit.grading.checks import CHECKS
from labkit.grading.checks.core import RECORDED
from labkit.grading.records import Answer, CheckCell, Submission, SubmissionError
from labkit.grading.release import ANSWER_PLACEHOLDER, release_notebook, tags
from labkit.grading.untrusted import UntrustedFileError, read_bytes

MAX_SUBMISSION_BYTES = 20 * 2**20
MAX_CELLS = 2000


# --- instructor notebooks -----------------------------------------------------------


def check_cells(notebook: NotebookNode, name: str = "notebook") -> list[CheckCell]:
    """The check cells of ``notebook``, named by the ``check_*`` function they call.

    Raises ValueError naming the notebook and cell when ``points`` is not an int >= 0.
    """
    found: list[CheckCell] = []
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for index, cell in enumerate(code_cells):
        if "check" not in tags(cell):
            continue
        points = cell.metadata.get("points", 1)
        if isinstance(points, bool) or not isinstance(points, int) or points < 0:
            raise ValueError(f"{name}, check cell {cell.id}: points must be an int >= 0, "
                             f"got {points!r}")
        call = re.search(r"\b(check_\w+)\s*\(", cell.source)
        label = call.group(1) if call else f"check cell {cell.id}"
        if any(check.name == label for check in found):
            label = f"{label} ({cell.id})"
        found.append(CheckCell(index, cell.id, label, points, call.group(1) if call else ""))
    return found


def lab_names(labs: Path) -> list[str]:
    """The names of the labs in ``labs``: the stems of its ``*.ipynb`` files."""
    labs = Path(labs)
    if not labs.is_dir():
        raise ValueError(f"labs must be a folder of instructor notebooks, got {str(labs)!r}")
    names = [path.stem for path in sorted(labs.glob("*.ipynb"))]
    if not names:
        raise ValueError(f"labs must hold at least one .ipynb notebook, {str(labs)!r} has none")
    return names


def load_labs(labs: Path, names: Iterable[str] | None = None) -> dict[str, NotebookNode]:
    """The instructor notebooks ``labs/<name>.ipynb`` by name (default: all), validated.

    Each must release cleanly, have valid check points and be executed (each check cell
    holds the line nbval compares with), so a mistake in a lab is reported before any
    submission of it is graded.
    """
    names = lab_names(labs) if names is None else sorted(names)
    notebooks = {name: nbformat.read(Path(labs) / f"{name}.ipynb", as_version=4)
                 for name in names}
    for lab, notebook in notebooks.items():
        if any("id" not in cell for cell in notebook.cells):
            raise ValueError(f"{lab}.ipynb: every cell needs an id (nbformat 4.5); "
                             "re-save it with nbformat >= 5.1")
        release_notebook(notebook, f"{lab}.ipynb")
        code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
        for check in check_cells(notebook, f"{lab}.ipynb"):
            if check.call not in CHECKS:
                raise ValueError(f"{lab}.ipynb, check cell {check.cell_id}: it calls no known "
                                 f"check (known: checks.{', checks.'.join(sorted(CHECKS))})")
            if not code_cells[check.code_index].outputs:
                raise ValueError(f"{lab}.ipynb, check cell {check.cell_id}: no stored output to "
                                 f"compare with; execute the lab first (labkit execute)")
    return notebooks


PRETRAINED = re.compile(r"""\bpretrained\(\s*["']([\w.-]+)["']""")


def pretrained_models(labs: Path) -> list[str]:
    """The zoo models the labs in ``labs`` load (``zoo.pretrained("name")`` in a cell), so
    the grader can train them once before any kernel starts."""
    from labkit import zoo

    named = {match for path in sorted(Path(labs).glob("*.ipynb"))
             for cell in nbformat.read(path, as_version=4).cells
             for match in PRETRAINED.findall(cell.source)}
    return sorted(named & set(zoo.RECIPES))


# --- submissions --------------------------------------------------------------------


def find_submissions(folder: Path, labs: Iterable[str]) -> tuple[list[Submission], list[str]]:
    """The submissions in ``folder`` and a list of what was ignored, and why.

    Two layouts, mixed freely: ``folder/<student>/<lab>.ipynb`` and
    ``folder/<student>__<lab>.ipynb``, where ``<lab>`` is an instructor notebook's
    stem (``00_baseline``). Names starting with a dot are skipped. A lab that someone
    submitted is graded for every student; a student who did not submit it gets a
    ``not submitted`` entry (``path`` None).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"submissions must be a folder, got {str(folder)!r}")
    known = set(labs)
    found: dict[tuple[str, str], Path] = {}
    ignored: list[str] = []
    students: set[str] = set()
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            ignored.append(f"{entry}: a link, not a submitted file or folder")
            continue
        if entry.is_dir():
            students.add(entry.name)
            candidates = [(entry.name, path.stem, path) for path in sorted(entry.iterdir())
                          if not path.name.startswith(".")]
        elif entry.suffix == ".ipynb" and "__" in entry.stem:
            student, lab = entry.stem.rsplit("__", 1)
            students.add(student)
            candidates = [(student, lab, entry)]
        else:
            candidates = [("", "", entry)]
        for student, lab, path in candidates:
            if path.is_symlink():
                ignored.append(f"{path}: a link, not a submitted file")
            elif path.suffix != ".ipynb" or not path.is_file() or not student:
                ignored.append(f"{path}: not <student>/<lab>.ipynb or <student>__<lab>.ipynb")
            elif lab not in known:
                ignored.append(f"{path}: no lab named {lab!r} (labs: {', '.join(sorted(known))})")
            elif (student, lab) in found:
                ignored.append(f"{path}: a second submission of {lab} by {student}")
            else:
                found[student, lab] = path
    submitted_labs = sorted({lab for _, lab in found})
    submissions = [Submission(student, lab, found.get((student, lab)))
                   for student in sorted(students) for lab in submitted_labs]
    return submissions, ignored


def read_submission(path: Path) -> dict[str, str]:
    """The sources of a submitted notebook's cells, by cell id (the file is only read).

    Raises :class:`SubmissionError` for a link or anything but a regular file, a file
    of more than :data:`MAX_SUBMISSION_BYTES` or :data:`MAX_CELLS` cells (both refused
    before the file is parsed), and a file that is not JSON or not a notebook.
    """
    try:
        raw = read_bytes(path, MAX_SUBMISSION_BYTES)
    except UntrustedFileError as error:
        raise SubmissionError(str(error)) from error
    cells = raw.count(b'"cell_type"')
    if cells > MAX_CELLS:
        raise SubmissionError(f"the notebook has {cells:,} cells, more than {MAX_CELLS:,}")
    try:
        notebook = nbformat.reads(raw.decode("utf-8"), as_version=4)
        cells = notebook["cells"]
        if not isinstance(cells, list):
            raise TypeError("'cells' is not a list")
    except Exception as error:  # whatever a broken file makes nbformat raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SubmissionError(f"not a readable notebook ({type(error).__name__}: "
                              f"{first_line[:200]})") from error
    return {cell["id"]: cell["source"] for cell in cells
            if isinstance(cell, dict) and isinstance(cell.get("id"), str)
            and isinstance(cell.get("source"), str)}


def merge(instructor: NotebookNode, answers: Mapping[str, str]) -> tuple[NotebookNode, list[str]]:
    """The instructor notebook with its exercise and question cells taken from ``answers``.

    ``answers`` maps cell ids to the student's sources. Only the source is taken (not
    the student's outputs, tags or metadata); a cell id missing from ``answers`` gets
    the released placeholder. Each check cell's stored output becomes the one line a
    check prints in grading mode (``<name>: results recorded``), which nbval compares.
    Returns the merged notebook (a new one) and the ids of the missing cells.
    """
    merged = copy.deepcopy(instructor)
    code_cells = [cell for cell in merged.cells if cell.cell_type == "code"]
    for check in check_cells(merged):
        line = f"{CHECKS[check.call].name}: {RECORDED}\n" if check.call in CHECKS else ""
        code_cells[check.code_index].outputs = [
            nbformat.v4.new_output("stream", name="stdout", text=line)]
    released = release_notebook(instructor)
    missing = []
    for cell, placeholder in zip(merged.cells, released.cells, strict=True):
        if not tags(cell) & {"exercise", "question"}:
            continue
        if cell.id in answers:
            cell.source = answers[cell.id]
        else:
            missing.append(cell.id)
            cell.source = placeholder.source
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return merged, missing


def _prompt(markdown: str) -> str:
    """A question's text on one line: the cell's lines that are not headings, else all."""
    lines = [line.strip() for line in markdown.splitlines() if line.strip()]
    text = [line for line in lines if not line.startswith("#")] or \
        [line.lstrip("#").strip() for line in lines]
    return " ".join(text)[:300]


def question_answers(instructor: NotebookNode, answers: Mapping[str, str]) -> list[Answer]:
    """The student's answer to each question cell, with the question asked just before."""
    found = []
    for index, cell in enumerate(instructor.cells):
        if "question" in tags(cell):
            prompt = _prompt(instructor.cells[index - 1].source if index else "")
            answer = answers.get(cell.id, "").strip()
            found.append(Answer(cell.id, prompt, "" if answer == ANSWER_PLACEHOLDER else answer))
    return found


def replaced_functions(instructor: NotebookNode) -> dict[str, list[str]]:
    """The labkit functions this lab's exercises replace, each with its checks' names."""
    replaced: dict[str, list[str]] = {}
    for check in check_cells(instructor):
        for function in CHECKS[check.call].replaces if check.call in CHECKS else ():
            replaced.setdefault(function, []).append(CHECKS[check.call].name)
    return replaced


def exercise_findings(instructor: NotebookNode, answers: Mapping[str, str]
                      ) -> dict[str, inspection.Findings]:
    """What each answered exercise cell's syntax reaches for, by cell id."""
    short = {function.rpartition(".")[2] for function in replaced_functions(instructor)}
    return {cell.id: inspection.inspect_source(answers[cell.id], short)
            for cell in instructor.cells if "exercise" in tags(cell) and cell.id in answers}


def review_notes(instructor: NotebookNode, answers: Mapping[str, str]) -> list[str]:
    """Exercise cells whose code reaches for frames, hooks, the grading package or the
    process: for a person to look at (reference use is scored by :func:`reference_uses`)."""
    notes = []
    for cell_id, found in exercise_findings(instructor, answers).items():
        if found.review:
            notes.append(f"review exercise cell {cell_id}: it uses "
                         f"{', '.join(sorted(found.review))}")
    return notes

