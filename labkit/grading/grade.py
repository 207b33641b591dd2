"""Grading: merge each submission into the instructor notebook, run nbval, read the table.

A student cannot be trusted with the checks, so a submission is never run as it is.
The grader builds a *merged* notebook: the instructor notebook, with its stored
expected check outputs, where only the ``exercise`` and ``question`` cells take the
source of the student's cell of the same cell id (a missing id counts as unanswered,
that is, the released placeholder). Editing a check cell or its stored output in a
submission therefore changes nothing.

The merged notebook runs under ``pytest --nbval-lax`` in a fresh kernel, in a fresh
temporary folder, with a scrubbed environment and resource limits, and nbval reports
each code cell as a test item named ``Cell N`` (N counts code cells) in a junit XML
file. Each check cell's item gives its grade: passed, or failed with the check's own
message. A cell that times out or a kernel that dies fails every check after it.
Submissions grade in parallel, one kernel each; the tables are written atomically.
"""

from __future__ import annotations

import copy
import csv
import io
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import nbformat
import psutil
from nbformat import NotebookNode

from labkit.grading.release import ANSWER_PLACEHOLDER, release_notebook, tags, write_atomically

if TYPE_CHECKING:
    from labkit.grading.shards import Shard

GRADE_COLUMNS = ("student", "lab", "check", "passed", "points", "earned", "message")
TOTAL_COLUMNS = ("student", "lab", "earned", "points", "questions", "notes")
ANSWER_COLUMNS = ("student", "lab", "question", "prompt", "answer")
ALL_LABS = "(all labs)"
MAX_SUBMISSION_BYTES = 100 * 2**20
SUSPICIOUS = re.compile(
    r"\b(checks|labkit\.grading|run_check|CheckFailed|builtins|__builtins__|sys\.modules"
    r"|sys\.stdout|__import__|importlib|os\.system|subprocess)\b"
)


@dataclass(frozen=True)
class Limits:
    """What one submission's kernel may use.

    ``cell_timeout_s``: wall time of one cell (nbval interrupts it);
    ``notebook_timeout_s``: wall time of the whole run (then every process is killed);
    ``memory_gib``: address space of each process (``RLIMIT_AS``);
    ``file_size_mib``: largest file a process may write (``RLIMIT_FSIZE``).
    The CPU time limit (``RLIMIT_CPU``) is the notebook timeout times the threads.
    """

    cell_timeout_s: float = 120
    notebook_timeout_s: float = 900
    memory_gib: float = 4
    file_size_mib: float = 256

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{limit.name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Submission:
    """One student's notebook for one lab; ``path`` is None when nothing was submitted."""

    student: str
    lab: str
    path: Path | None


@dataclass(frozen=True)
class CheckCell:
    """A check cell of an instructor notebook: its code-cell index (nbval's ``Cell N``)."""

    code_index: int
    cell_id: str
    name: str
    points: int


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    points: int
    message: str = ""

    @property
    def earned(self) -> int:
        return self.points if self.passed else 0


@dataclass(frozen=True)
class Answer:
    """A student's answer to a question cell, to grade by hand."""

    question: str
    prompt: str
    answer: str


@dataclass
class LabGrade:
    """Everything the grader found out about one submission."""

    student: str
    lab: str
    checks: list[CheckResult]
    answers: list[Answer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def earned(self) -> int:
        return sum(result.earned for result in self.checks)

    @property
    def points(self) -> int:
        return sum(result.points for result in self.checks)


class SubmissionError(ValueError):
    """A submitted file is not a readable notebook."""


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
        found.append(CheckCell(index, cell.id, label, points))
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
            if not code_cells[check.code_index].outputs:
                raise ValueError(f"{lab}.ipynb, check cell {check.cell_id}: no stored output to "
                                 f"compare with; execute the lab first (labkit execute)")
    return notebooks


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
            if path.suffix != ".ipynb" or not path.is_file() or not student:
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

    Raises :class:`SubmissionError` for a file that is too large, not JSON, or not a
    notebook.
    """
    size = path.stat().st_size
    if size > MAX_SUBMISSION_BYTES:
        raise SubmissionError(f"the file has {size:,} bytes, more than {MAX_SUBMISSION_BYTES:,}")
    try:
        notebook = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
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
    the released placeholder. Returns the merged notebook (a new one) and the ids of
    the missing cells.
    """
    merged = copy.deepcopy(instructor)
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


def review_notes(instructor: NotebookNode, answers: Mapping[str, str]) -> list[str]:
    """Exercise cells whose code names the checks, the import system or the process.

    A heuristic for a human to look at: exercise code runs in the same kernel as the
    checks and could replace them; honest solutions have no reason to use these names.
    """
    notes = []
    for cell in instructor.cells:
        if "exercise" in tags(cell) and cell.id in answers:
            names = sorted(set(SUSPICIOUS.findall(answers[cell.id])))
            if names:
                notes.append(f"review exercise cell {cell.id}: it uses {', '.join(names)}")
    return notes


# --- running nbval ------------------------------------------------------------------


@dataclass(frozen=True)
class NbvalRun:
    """What one pytest run left behind: the junit XML (None if none) and the log tail."""

    junit: str | None
    returncode: int
    log_tail: str
    timed_out: bool


def _apply_limits(limits: Limits, threads: int) -> None:
    """Set the resource limits in the child before it runs pytest; the kernel inherits."""
    memory = int(limits.memory_gib * 2**30)
    cpu = int(limits.notebook_timeout_s * threads) + 1
    size = int(limits.file_size_mib * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def kernel_environment(root: Path, threads: int) -> dict[str, str]:
    """The whole environment of pytest and its kernel: nothing of the instructor's."""
    return {
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "LABKIT_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": str(threads),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
    }


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill pytest, its process group, and every descendant (the kernel has its own)."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()


def run_nbval(notebook: NotebookNode, limits: Limits, cache: Path | None = None,
              threads: int = 1) -> NbvalRun:
    """Run ``pytest --nbval-lax`` on ``notebook`` in a fresh temporary folder.

    The folder holds ``work/`` (the kernel's working folder, with the notebook),
    ``home/``, ``tmp/``, ``cache/`` (a copy of the ``*.pt`` files of ``cache``, so the
    kernel never trains and never touches the instructor's cache) and ``report/``.
    """
    with tempfile.TemporaryDirectory(prefix="labkit-grade-", ignore_cleanup_errors=True) as name:
        root = Path(name)
        for folder in ("work", "home", "tmp", "cache", "report"):
            (root / folder).mkdir()
        for model in sorted(Path(cache).glob("*.pt")) if cache else []:
            shutil.copy2(model, root / "cache" / model.name)
        (root / "work" / "pytest.ini").write_text("[pytest]\n")
        nbformat.write(notebook, root / "work" / "submission.ipynb")
        junit, log = root / "report" / "junit.xml", root / "report" / "pytest.log"
        command = [
            sys.executable, "-m", "pytest", "-p", "nbval.plugin", "-p", "no:cacheprovider",
            "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={limits.cell_timeout_s}",
            f"--junitxml={junit}", "--color=no", "-q", "submission.ipynb",
        ]
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command, cwd=root / "work", env=kernel_environment(root, threads),
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=partial(_apply_limits, limits, threads),
            )
            try:
                process.wait(timeout=limits.notebook_timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_tree(process)
                timed_out = True
        return NbvalRun(
            junit=junit.read_text(encoding="utf-8", errors="replace") if junit.exists() else None,
            returncode=process.returncode,
            log_tail=log.read_bytes()[-2000:].decode("utf-8", errors="replace"),
            timed_out=timed_out,
        )


# --- reading the junit report -------------------------------------------------------


@dataclass(frozen=True)
class CellOutcome:
    """nbval's verdict on one code cell. ``stops`` says later cells cannot be trusted."""

    passed: bool
    message: str = ""
    stops: bool = False


_ANSI = re.compile(r"(\x1b|#x1B)\[[0-9;]*[A-Za-z]")
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): ?(.*)$")


def _exception_message(report: str) -> str:
    """The last ``Name: message`` line of a traceback, with the lines after it."""
    lines = report.splitlines()
    for number in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION_LINE.match(lines[number])
        if match and match.group(1) not in ("Traceback", "Input"):
            name, text = match.groups()
            text = "\n".join([text, *lines[number + 1:]]).strip()
            return text if name.endswith("CheckFailed") else f"{name}: {text}"
    return "the cell raised an exception"


def _outcome(report: str, cell_timeout_s: float) -> CellOutcome:
    """Classify nbval's failure report of one cell."""
    report = _ANSI.sub("", report)
    if "Failed to interrupt kernel" in report or "exceeded waiting for output" in report:
        return CellOutcome(False, f"the kernel died or stopped responding (no reply "
                                  f"within {cell_timeout_s:g} s)", stops=True)
    if "Kernel dead" in report:
        return CellOutcome(False, "the kernel had died", stops=True)
    if "Timeout of" in report:
        return CellOutcome(False, f"timed out after {cell_timeout_s:g} s", stops=True)
    if "Cell outputs differ" in report:
        diff = " ".join(report.partition("Traceback:")[2].split())[:300]
        return CellOutcome(False, f"the check's output differs from its expected line: {diff}")
    if "Cell execution caused an exception" in report:
        return CellOutcome(False, _exception_message(report))
    return CellOutcome(False, report.strip().splitlines()[0] if report.strip() else "failed")


def parse_junit(text: str, cell_timeout_s: float) -> dict[int, CellOutcome]:
    """nbval's outcome of each code cell, by code-cell index, from a junit XML report."""
    outcomes = {}
    for case in ElementTree.fromstring(text).iter("testcase"):
        match = re.fullmatch(r"Cell (\d+)", case.get("name", ""))
        if not match:
            continue
        problem = next((case.find(kind) for kind in ("failure", "error", "skipped")
                        if case.find(kind) is not None), None)
        if problem is None:
            outcome = CellOutcome(True)
        elif problem.tag == "skipped":
            outcome = CellOutcome(False, f"not run ({problem.get('message', 'skipped')})")
        else:
            outcome = _outcome(problem.text or problem.get("message", ""), cell_timeout_s)
        outcomes[int(match.group(1))] = outcome
    return outcomes


def score(notebook: NotebookNode, checks: list[CheckCell], run: NbvalRun,
          limits: Limits) -> list[CheckResult]:
    """One result per check cell; after a cell that stops the kernel, every check fails.

    The report counts only when pytest finished normally (exit code 0 or 1): pytest
    then wrote it last, over anything student code may have put in its place.
    """
    if run.timed_out or run.junit is None or run.returncode not in (0, 1):
        reason = (f"not run: the notebook ran past its total time limit of "
                  f"{limits.notebook_timeout_s:g} s" if run.timed_out
                  else f"not run: pytest exited with code {run.returncode}: "
                       f"{run.log_tail.strip()[-300:]}")
        return [CheckResult(check.name, False, check.points, reason) for check in checks]
    outcomes = parse_junit(run.junit, limits.cell_timeout_s)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    by_index = {check.code_index: check for check in checks}
    results, stopped = [], ""
    for index, cell in enumerate(code_cells):
        outcome = outcomes.get(index, CellOutcome(False, "not run (no result from nbval)"))
        check = by_index.get(index)
        if check and stopped:
            results.append(CheckResult(check.name, False, check.points, stopped))
        elif check:
            results.append(CheckResult(check.name, outcome.passed, check.points,
                                       outcome.message))
        if outcome.stops and not stopped:
            kind = next(iter(sorted(tags(cell) & {"exercise", "check"})), "code")
            stopped = f"not run: in an earlier {kind} cell ({cell.id}), {outcome.message}"
    return results


# --- grading ------------------------------------------------------------------------


def failed(submission: Submission, checks: list[CheckCell], reason: str) -> LabGrade:
    """Every check failed for ``reason``, which is also the submission's note."""
    return LabGrade(submission.student, submission.lab,
                    [CheckResult(check.name, False, check.points, reason) for check in checks],
                    notes=[reason])


def grade_submission(submission: Submission, instructor: NotebookNode,
                     limits: Limits = Limits(), cache: Path | None = None,
                     threads: int = 1) -> LabGrade:
    """Grade one submission; any problem with it becomes failed checks and a note."""
    checks = check_cells(instructor, submission.lab)
    if submission.path is None:
        return failed(submission, checks, "not submitted")
    try:
        answers = read_submission(submission.path)
    except (SubmissionError, OSError) as error:
        return failed(submission, checks, f"unreadable submission: {error}")
    merged, missing = merge(instructor, answers)
    notes = review_notes(instructor, answers)
    if missing:
        notes.insert(0, f"cells missing from the submission (unanswered): {', '.join(missing)}")
    run = run_nbval(merged, limits, cache, threads)
    return LabGrade(submission.student, submission.lab,
                    score(merged, checks, run, limits),
                    question_answers(instructor, answers), notes)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where there is one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def grade(submissions: Path, labs: Path, out: Path, *, jobs: int | None = None,
          limits: Limits = Limits(), cache: Path | None = None,
          on_graded: Callable[[LabGrade], None] | None = None,
          shard: Shard | None = None,
          ) -> tuple[list[LabGrade], list[str]]:
    """Grade every submission in ``submissions`` against ``labs``; write the tables.

    ``jobs`` kernels run at once (default: one per available core), each with
    ``cores // jobs`` threads. ``cache`` is a folder of pretrained ``*.pt`` files each
    kernel gets a copy of. Writes ``out`` (one row per check), ``<out>-totals.csv`` and
    ``<out>-questions.csv`` (see :func:`write_tables`). Returns the grades and what was
    ignored in ``submissions``. With a ``shard`` (:class:`~labkit.grading.shards.Shard`),
    only the students it holds are graded and written.
    """
    cores = available_cores()
    if jobs is None:
        jobs = cores
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    found, ignored = find_submissions(submissions, lab_names(labs))
    if shard is not None:
        found = [submission for submission in found if shard.holds(submission.student)]
    instructors = load_labs(labs, {submission.lab for submission in found})
    threads = max(1, cores // jobs)
    grades = []
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(grade_submission, submission, instructors[submission.lab],
                               limits, cache, threads): submission for submission in found}
        for future in as_completed(futures):
            submission = futures[future]
            try:
                grades.append(future.result())
            except Exception as error:  # a grader failure costs this submission only
                checks = check_cells(instructors[submission.lab], submission.lab)
                grades.append(failed(submission, checks, f"grading error: {error!r}"))
            if on_graded:
                on_graded(grades[-1])
    grades.sort(key=lambda lab_grade: (lab_grade.student, lab_grade.lab))
    write_tables(grades, out)
    return grades, ignored


# --- the tables ---------------------------------------------------------------------


def table_paths(out: Path) -> tuple[Path, Path, Path]:
    """``grades.csv`` -> (``grades.csv``, ``grades-totals.csv``, ``grades-questions.csv``)."""
    out = Path(out)
    return out, out.with_name(f"{out.stem}-totals.csv"), out.with_name(f"{out.stem}-questions.csv")


def _csv(columns: tuple[str, ...], rows: Iterable[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_tables(grades: list[LabGrade], out: Path) -> tuple[Path, Path, Path]:
    """Write the three grade tables atomically; returns their paths.

    - ``out``: student, lab, check, passed, points, earned, message (one row per check);
    - ``<out>-totals.csv``: student, lab, earned, points, questions (how many to grade
      by hand), notes; plus one ``(all labs)`` row per student;
    - ``<out>-questions.csv``: student, lab, question (cell id), prompt, answer.
    """
    checks_path, totals_path, answers_path = table_paths(out)
    checks_rows = [(g.student, g.lab, r.check, r.passed, r.points, r.earned, r.message)
                   for g in grades for r in g.checks]
    totals_rows = []
    for student in sorted({g.student for g in grades}):
        own = [g for g in grades if g.student == student]
        totals_rows += [(g.student, g.lab, g.earned, g.points, len(g.answers),
                         "; ".join(g.notes)) for g in own]
        totals_rows.append((student, ALL_LABS, sum(g.earned for g in own),
                            sum(g.points for g in own), sum(len(g.answers) for g in own), ""))
    answers_rows = [(g.student, g.lab, a.question, a.prompt, a.answer)
                    for g in grades for a in g.answers]
    write_atomically(checks_path, _csv(GRADE_COLUMNS, checks_rows))
    write_atomically(totals_path, _csv(TOTAL_COLUMNS, totals_rows))
    write_atomically(answers_path, _csv(ANSWER_COLUMNS, answers_rows))
    return checks_path, totals_path, answers_path
