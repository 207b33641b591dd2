"""Gradescope: the autograder zip, and the ``results.json`` it writes for each submission.

Gradescope's autograder (https://gradescope-autograders.readthedocs.io) unpacks a zip
into ``/autograder/source``, runs its ``setup.sh`` once to build an image, then, for each
submission, runs ``run_autograder`` with the student's files in
``/autograder/submission`` and reads ``/autograder/results/results.json``. The zip
:func:`build_autograder` writes holds

- ``setup.sh``: installs Python 3.11 or later (Ubuntu 22.04's ``python3.11`` where the
  image's own is older), bubblewrap and the pinned course environment, and trains the
  pretrained models into a cache;
- ``run_autograder``: runs :func:`run_autograder` with the labkit ``setup.sh``
  installed (the one the kernels import too), and writes a results file of its own
  should Python fail before it could;
- ``labs/``: the instructor notebooks, the course secret (the hidden cases of each
  student derive from it), ``autograder.json`` (which labs, limits, visibility,
  isolation), and labkit's source with ``pyproject.toml`` and ``constraints.txt``.

:func:`run_autograder` first closes ``source`` and ``results`` to other users, then
grades each lab's notebook with the same isolation and referee as ``labkit grade``
(:func:`~labkit.grading.grade.grade_submission`): in Gradescope's container, which refuses
bubblewrap's namespaces, that is the ``container`` mode. It writes one test per check
(``score``, ``max_score``, ``output`` = the check's feedback) and one zero-point entry per
question cell, left for manual grading. It always writes a valid file: a missing or
unreadable submission scores 0 with a message saying why; when the autograder itself
fails, the student reads that the submission could not be graded and that the
instructor has been told, and the details go to the autograder's output, which only
the instructor sees (as do the review flags). The root is ``/autograder`` unless
``LABKIT_AUTOGRADER_ROOT`` names another (for tests).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import labkit
from labkit import zoo
from labkit.grading import isolation, seeds
from labkit.grading.grade import grade_submission
from labkit.grading.records import MODES, GradingConfig, LabGrade, Limits, Submission
from labkit.grading.release import write_atomically
from labkit.grading.submissions import check_cells, load_labs
from labkit.grading.tables import safe_cell
from labkit.grading.untrusted import clean_text

ROOT_VARIABLE = "LABKIT_AUTOGRADER_ROOT"
DEFAULT_ROOT = Path("/autograder")
CONFIG = "autograder.json"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
HIDDEN_CASE = re.compile(r"case 'hidden case \d+")
PROJECT_FILES = ("pyproject.toml", "constraints.txt", "README.md", "LICENSE")

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu image (22.04 or 24.04).
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends bubblewrap python3-venv python3-pip
PYTHON=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PYTHON=python3.11
fi
"$PYTHON" -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
/autograder/venv/bin/pip install "torch==$(sed -n 's/^torch==//p' constraints.txt)" \\
    --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install . -c constraints.txt
chmod -R a+rX /autograder/venv
LABKIT_CACHE=/autograder/cache /autograder/venv/bin/labkit cache fill
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission. It always leaves results/results.json.
set -u
absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
ROOT="$(absolute "${LABKIT_AUTOGRADER_ROOT:-/autograder}")"
PYTHON="$(absolute "${LABKIT_PYTHON:-$ROOT/venv/bin/python}")"
export LABKIT_CACHE="$(absolute "${LABKIT_CACHE:-$ROOT/cache}")"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$ROOT/results"
rm -f "$ROOT/results/results.json"
cd "$ROOT" && "$PYTHON" -m labkit.grading.gradescope "$ROOT"
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
    echo "The autograder failed before it could grade (exit status $status)."
    printf '{"score": 0, "output": "%s", "execution_time": 0, ' \\
        "This submission could not be graded; your instructor has been told." \\
        > "$ROOT/results/results.json"
    printf '"stdout_visibility": "hidden", "tests": []}\\n' >> "$ROOT/results/results.json"
fi
"""
UNGRADED = "This submission could not be graded; your instructor has been told."


def _check_visibility(name: str, value: str) -> None:
    if value not in VISIBILITIES:
        raise ValueError(f"{name} must be one of {', '.join(VISIBILITIES)}, got {value!r}")


def _instructor_notebooks(labs: Sequence[Path]) -> dict[str, Path]:
    """The instructor notebooks named by ``labs`` (notebooks or folders of them), by lab."""
    found: dict[str, Path] = {}
    for path in map(Path, labs):
        if path.is_dir():
            notebooks = sorted(path.glob("*.ipynb"))
            if not notebooks:
                raise ValueError(f"labs: {str(path)!r} holds no .ipynb notebook")
        elif path.suffix == ".ipynb" and path.is_file():
            notebooks = [path]
        else:
            raise ValueError(f"labs must be instructor notebooks or folders of them, "
                             f"got {str(path)!r}")
        for notebook in notebooks:
            if notebook.stem in found:
                raise ValueError(f"labs: two notebooks named {notebook.name}: "
                                 f"{found[notebook.stem]} and {notebook}")
            found[notebook.stem] = notebook
    if not found:
        raise ValueError("labs must name at least one instructor notebook, got none")
    return found


def _project_root() -> Path:
    """The workbook checkout labkit runs from: its source goes into the zip."""
    root = Path(labkit.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise ValueError(f"labkit gradescope needs labkit's source checkout (pyproject.toml "
                         f"beside the labkit package); {str(root)!r} has none")
    return root


def build_autograder(labs: Sequence[Path], out: Path, *, limits: Limits | None = None,
                     visibility: str = "visible", hidden_visibility: str = "after_published",
                     isolation: str | None = None, force: bool = False) -> Path:
    """Write Gradescope's autograder zip for the instructor notebooks ``labs`` to ``out``.

    Each notebook must load as ``labkit grade`` loads it (released cleanly, executed) and
    hold at least one check cell. ``limits`` (default :class:`Limits`) bound each
    kernel as in ``labkit grade``. ``visibility`` is that of each check's test;
    ``hidden_visibility`` that of a check failing on a hidden case (its message names
    the case). ``isolation`` forces a mode (default: the strongest Gradescope's container
    allows, chosen per submission). The zip carries the course secret of the first
    notebook's folder (created if there is none yet), so that Gradescope draws the same
    hidden cases as ``labkit grade``. Refuses an existing ``out`` unless ``force``;
    nothing is written when anything is refused.
    """
    out = Path(out)
    _check_visibility("visibility", visibility)
    _check_visibility("hidden_visibility", hidden_visibility)
    if out.suffix != ".zip":
        raise ValueError(f"out must be a .zip file, got {str(out)!r}")
    if out.exists() and not force:
        raise ValueError(f"out {str(out)!r} exists; pass force=True (--force) to replace it")
    if isolation is not None and isolation not in MODES:
        raise ValueError(f"isolation must be one of {', '.join(MODES)}, got {isolation!r}")
    notebooks = _instructor_notebooks(labs)
    for lab, path in notebooks.items():
        instructor = load_labs(path.parent, [lab])[lab]
        if not check_cells(instructor, path.name):
            raise ValueError(f"labs: {path} has no check cells (code cells tagged 'check'); "
                             "there would be nothing to grade")
    root = _project_root()
    config = {"labs": sorted(notebooks), "limits": dataclasses.asdict(limits or Limits()),
              "visibility": visibility, "hidden_visibility": hidden_visibility,
              "isolation": isolation}
    secret = seeds.course_secret(next(iter(notebooks.values())).parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = 0o100755 << 16
                archive.writestr(info, text, zipfile.ZIP_DEFLATED)
            archive.writestr(CONFIG, json.dumps(config, indent=1) + "\n")
            archive.writestr(f"labs/{seeds.SECRET_FILE}", secret)
            for lab, path in sorted(notebooks.items()):
                archive.write(path, f"labs/{lab}.ipynb")
            for name in PROJECT_FILES:
                if (root / name).is_file():
                    archive.write(root / name, name)
            labkit_files = [*(root / "labkit").rglob("*.py"),
                            *(root / "labkit" / "weights").glob("*.pt")]
            for path in sorted(labkit_files):
                archive.write(path, str(path.relative_to(root)))
        os.replace(temporary, out)
    except BaseException:
        os.unlink(temporary)
        raise
    return out


# --- inside Gradescope ------------------------------------------------------------------


def submitted_notebook(lab: str, labs: Sequence[str], submission: Path) -> tuple[Path | None, str]:
    """The submitted file to grade as ``lab``, and a message when there is none.

    ``<lab>.ipynb`` anywhere under ``submission``; for a single-lab autograder, also the
    only ``.ipynb`` file, whatever its name.
    """
    files = sorted(path for path in submission.rglob("*")
                   if path.is_file() and not path.is_symlink() and not any(
        part.startswith(".") or part == "__MACOSX" for part in path.relative_to(submission).parts))
    notebooks = [path for path in files if path.suffix == ".ipynb"]
    named = [path for path in notebooks if path.stem == lab]
    if len(named) == 1 or (not named and len(labs) == 1 and len(notebooks) == 1):
        return (named or notebooks)[0], ""
    found = ", ".join(str(path.relative_to(submission)) for path in files) or "nothing"
    if len(named) > 1:
        return None, f"{lab}: several files named {lab}.ipynb were submitted ({found})"
    return None, f"{lab}: no notebook {lab}.ipynb was submitted (found: {found})"


def _test(lab_grade: LabGrade, result, visibility: str, hidden_visibility: str) -> dict:
    hidden = bool(HIDDEN_CASE.search(result.message))
    return {"name": f"{lab_grade.lab}: {result.check}", "score": result.earned,
            "max_score": result.points, "status": "passed" if result.passed else "failed",
            "output": safe_text(result.message) or "passed",
            "visibility": hidden_visibility if hidden else visibility}


def safe_text(text: str) -> str:
    """Text a student's browser or a spreadsheet may show: cleaned, capped, no formula."""
    return str(safe_cell(text))


def results_json(grades: Sequence[LabGrade], messages: Sequence[str], config: dict,
                 execution_time: float) -> dict:
    """Gradescope's results of ``grades``: one test per check, one entry per question.

    What the student sees names what was submitted and each check's feedback; the
    review notes are for the instructor and go to the autograder's output only
    (:func:`instructor_report`). When the grader failed on a lab (``problem``), the
    student reads :data:`UNGRADED` instead of a score.
    """
    if any(g.problem for g in grades):
        return ungraded(execution_time)
    tests = []
    for lab_grade in grades:
        tests += [_test(lab_grade, result, config["visibility"], config["hidden_visibility"])
                  for result in lab_grade.checks]
        tests += [{"name": f"{lab_grade.lab}: question {answer.question} (graded by hand)",
                   "score": 0, "max_score": 0, "visibility": "visible",
                   "output": safe_text(f"{answer.prompt}\n\nYour answer: "
                                       f"{answer.answer or '(none)'}")}
                  for answer in lab_grade.answers]
    output = "\n".join(safe_text(message) for message in messages) or \
        "Graded: see each check below."
    return {"score": sum(g.earned for g in grades), "execution_time": round(execution_time),
            "output": output, "stdout_visibility": "hidden", "tests": tests}


def ungraded(execution_time: float) -> dict:
    """The results of a submission the autograder could not grade."""
    return {"score": 0, "execution_time": round(execution_time), "output": UNGRADED,
            "stdout_visibility": "hidden", "tests": []}


def instructor_report(grades: Sequence[LabGrade]) -> str:
    """What only the instructor sees (the autograder's hidden output): the isolation
    mode, review notes and the grader's problems."""
    lines = []
    for g in grades:
        lines.append(f"{g.lab}: {g.earned}/{g.points} in the {g.mode} isolation")
        lines += [f"{g.lab}: {clean_text(note)}" for note in g.notes]
        if g.problem:
            lines.append(f"{g.lab}: the grader failed: {clean_text(g.problem)}")
    return "\n".join(lines)


def student_id(root: Path) -> str:
    """Who submitted, from Gradescope's ``submission_metadata.json`` (the users' ids, or
    their emails), so each student draws hidden cases of their own; ``student`` when the
    file says nothing."""
    try:
        metadata = json.loads((root / "submission_metadata.json").read_text(encoding="utf-8"))
        users = metadata.get("users") or []
        ids = sorted(str(user.get("id") or user.get("email") or "") for user in users)
    except (OSError, ValueError, AttributeError):
        ids = []
    return "+".join(user for user in ids if user) or "student"


CLOSED = ("source", "results", "submission")
"""The folders of the autograder root that no submission's process may read or write."""


def grade_gradescope_submission(root: Path) -> tuple[list[LabGrade], list[str], dict]:
    """Grade ``root/submission`` against the labs in ``root/source``."""
    for name in CLOSED:
        (root / name).mkdir(exist_ok=True)
        os.chmod(root / name, 0o700)
    source = root / "source"
    config = json.loads((source / CONFIG).read_text(encoding="utf-8"))
    instructors = load_labs(source / "labs", config["labs"])
    mode = isolation.choose(config.get("isolation"))
    for name in sorted(zoo.RECIPES):  # train once here, so no kernel trains
        zoo.pretrained(name, progress=False)
    grading = GradingConfig(Limits(**config["limits"]), seeds.course_secret(source / "labs"),
                            mode, zoo.cache_dir(), len(isolation.cores()))
    student = student_id(root)
    grades, messages = [], []
    for lab, instructor in instructors.items():
        path, message = submitted_notebook(lab, config["labs"], root / "submission")
        if message:
            messages.append(message)
        grades.append(grade_submission(Submission(student, lab, path), instructor, grading,
                                       mode))
    return grades, messages, config


def run_autograder(root: Path) -> Path:
    """Grade the submission under ``root`` and write ``root/results/results.json``.

    Whatever goes wrong, a valid results file is written; what went wrong is printed to
    the autograder's output, which only the instructor sees.
    """
    start = time.monotonic()
    try:
        grades, messages, config = grade_gradescope_submission(root)
        results = results_json(grades, messages, config, time.monotonic() - start)
        print(instructor_report(grades))
    except Exception as error:  # the student must get a results file whatever happened
        print(f"The autograder could not grade this submission: {type(error).__name__}: "
              f"{clean_text(str(error))}")
        results = ungraded(time.monotonic() - start)
    path = root / "results" / "results.json"
    write_atomically(path, json.dumps(results, indent=1) + "\n")
    return path


if __name__ == "__main__":
    run_autograder(Path(sys.argv[1] if len(sys.argv) > 1
                        else os.environ.get(ROOT_VARIABLE, DEFAULT_ROOT)))
