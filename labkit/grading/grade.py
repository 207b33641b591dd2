"""Grading: merge each submission into the instructor notebook, run it in a sandbox,
let the referee decide.

A student cannot be trusted with the checks, so a submission is never run as it is.
The grader builds a *merged* notebook: the instructor notebook where only the
``exercise`` and ``question`` cells take the source of the student's cell of the same
cell id (a missing id counts as unanswered, that is, the released placeholder). Editing
a check cell or its stored output in a submission therefore changes nothing.

The merged notebook runs under ``pytest --nbval-lax`` in a fresh kernel inside a
bubblewrap sandbox (:mod:`labkit.grading.sandbox`; ``sandbox=False`` falls back to a
scrubbed environment and a private folder), with resource limits, a disk quota and
timeouts. In the sandbox the checks run in grading mode: they record the student's
outcomes on the public cases and on hidden cases drawn from this run's secret seed, and
decide nothing. After the sandbox has ended, :mod:`labkit.grading.referee` compares the
outcomes with the reference computed here. A check earns its points when nbval ran its
cell without error (``Cell N`` of the junit report, N counting code cells), the referee
accepts every case, and neither the exercise cells' syntax
(:mod:`labkit.grading.inspection`) nor the kernel's tripwire (:mod:`labkit.grading.kernel`)
shows a call of the reference the exercise replaces. A cell that times out or a kernel
that dies fails every check after it. Submissions grade in parallel, one sandbox each;
the tables are written by the grader alone, atomically, after every sandbox has ended.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import multiprocessing
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import nbformat
import psutil
from nbformat import NotebookNode

from labkit.grading import inspection, referee, sandbox
from labkit.grading.checks import CHECKS
from labkit.grading.checks.core import GRADING_DIR, GRADING_SEED, RECORDED
from labkit.grading.release import ANSWER_PLACEHOLDER, release_notebook, tags, write_atomically

if TYPE_CHECKING:
    from labkit.grading.shards import Shard

GRADE_COLUMNS = ("student", "lab", "check", "passed", "points", "earned", "message", "mode")
TOTAL_COLUMNS = ("student", "lab", "earned", "points", "questions", "notes", "mode")
ANSWER_COLUMNS = ("student", "lab", "question", "prompt", "answer")
ALL_LABS = "(all labs)"
MAX_SUBMISSION_BYTES = 100 * 2**20
SANDBOX, PROCESS = "sandbox", "process"
"""The two modes a submission is graded in, as the tables record them."""


@dataclass(frozen=True)
class Limits:
    """What one submission's kernel may use.

    ``cell_timeout_s``: wall time of one cell (nbval interrupts it);
    ``notebook_timeout_s``: wall time of the whole run (then every process is killed);
    ``memory_gib``: address space of each process (``RLIMIT_AS``);
    ``file_size_mib``: largest file a process may write (``RLIMIT_FSIZE``);
    ``disk_mib``: what the submission's folder may hold in all (watched; past it every
    process is killed), and the size of the sandbox's ``/tmp``;
    ``processes``: processes and threads of the submission (a pids cgroup where the
    grader may make one, and ``RLIMIT_NPROC``, which the kernel does not apply to root).
    The CPU time limit (``RLIMIT_CPU``) is the notebook timeout times the threads.
    """

    cell_timeout_s: float = 120
    notebook_timeout_s: float = 900
    memory_gib: float = 4
    file_size_mib: float = 256
    disk_mib: float = 1024
    processes: int = 256

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
    call: str = ""


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
    mode: str = SANDBOX

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


# --- running nbval ------------------------------------------------------------------


@dataclass(frozen=True)
class NbvalRun:
    """What one pytest run left behind: the junit XML (None if none), the log tail, and
    why it was stopped (``"time"``, ``"disk"`` or ``""``)."""

    junit: str | None
    returncode: int
    log_tail: str
    stopped: str = ""

    @property
    def timed_out(self) -> bool:
        return self.stopped == "time"


@dataclass(frozen=True)
class GradingRun:
    """What a graded kernel needs besides the notebook: the run's secret seed, and the
    exercise sources and replaced functions the tripwire watches."""

    seed: int
    exercises: tuple[str, ...] = ()
    replaced: dict = field(default_factory=dict)
    sandboxed: bool = True


def _apply_limits(limits: Limits, threads: int, group: Path | None = None) -> None:
    """Set the resource limits in the child before it runs pytest, and move it into its
    process group (:func:`labkit.grading.sandbox.process_group`); the kernel inherits."""
    sandbox.join_group(group)
    memory = int(limits.memory_gib * 2**30)
    cpu = int(limits.notebook_timeout_s * threads) + 1
    size = int(limits.file_size_mib * 2**20)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))


def kernel_environment(root: Path, threads: int, seed: int | None = None) -> dict[str, str]:
    """The whole environment of pytest and its kernel: nothing of the instructor's.

    ``root`` is the scratch folder as the kernel sees it. With a ``seed``, the checks
    run in grading mode and IPython's profile under ``root`` installs the tripwire.
    """
    env = {
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "LANG": "C.UTF-8",
        "LABKIT_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": str(threads),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "JUPYTER_PLATFORM_DIRS": "1",
        "MPLBACKEND": "agg",
    }
    if seed is not None:
        env |= {GRADING_DIR: str(root / "results"), GRADING_SEED: str(seed),
                "IPYTHONDIR": str(root / "ipython")}
    return env


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


def folder_bytes(folder: Path) -> int:
    """What the files under ``folder`` hold, in bytes (links not followed)."""
    total = 0
    for path, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(path, name)).st_size
            except OSError:
                pass
    return total


def _prepare(root: Path, notebook: NotebookNode, cache: Path | None, run: GradingRun,
             inside: Path) -> None:
    """The scratch folder: ``work/`` (the notebook), ``home/``, ``tmp/``, ``cache/`` (a
    copy of the pretrained ``*.pt`` files, so the kernel never trains and never touches
    the instructor's cache), ``results/``, ``report/`` and the IPython profile whose
    startup file installs the tripwire."""
    for folder in ("work", "home", "tmp", "cache", "report", "results"):
        (root / folder).mkdir()
    for model in sorted(Path(cache).glob("*.pt")) if cache else []:
        shutil.copy2(model, root / "cache" / model.name)
    (root / "work" / "pytest.ini").write_text("[pytest]\n")
    nbformat.write(notebook, root / "work" / "submission.ipynb")
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    settings = {"exercises": list(run.exercises), "replaces": run.replaced,
                "log": str(inside / "results" / referee.TRIPWIRE_LOG)}
    (root / "tripwire.json").write_text(json.dumps(settings))
    (startup / "00-labkit-tripwire.py").write_text(
        "from labkit.grading import kernel\n"
        f"kernel.install({str(inside / 'tripwire.json')!r})\n"
        "del kernel\n")


def run_nbval(root: Path, notebook: NotebookNode, limits: Limits, cache: Path | None,
              threads: int, run: GradingRun) -> NbvalRun:
    """Run ``pytest --nbval-lax`` on ``notebook`` over the scratch folder ``root``, in a
    sandbox when ``run.sandboxed``; kill everything past the time limit or the disk
    quota."""
    inside = sandbox.INSIDE if run.sandboxed else root
    _prepare(root, notebook, cache, run, inside)
    junit, log = inside / "report" / "junit.xml", root / "report" / "pytest.log"
    argv = [
        sys.executable, "-m", "pytest", "-p", "nbval.plugin", "-p", "no:cacheprovider",
        "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={limits.cell_timeout_s}",
        f"--junitxml={junit}", "--color=no", "-q", "submission.ipynb",
    ]
    env = kernel_environment(inside, threads, run.seed)
    if run.sandboxed:
        argv = sandbox.command(root, argv, env, limits.disk_mib)
    with open(log, "wb") as output, sandbox.process_group(limits.processes) as group:
        process = subprocess.Popen(
            argv, cwd=root / "work", env=env, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=partial(_apply_limits, limits, threads, group),
        )
        stopped = _watch(process, root, limits)
    report = root / "report" / "junit.xml"
    return NbvalRun(
        junit=report.read_text(encoding="utf-8", errors="replace")
        if report.is_file() and not report.is_symlink() else None,
        returncode=process.returncode,
        log_tail=log.read_bytes()[-2000:].decode("utf-8", errors="replace"),
        stopped=stopped,
    )


def _watch(process: subprocess.Popen, root: Path, limits: Limits) -> str:
    """Wait for ``process``; kill its tree past the time limit (``"time"``) or when the
    scratch folder outgrows the disk quota (``"disk"``)."""
    deadline = time.monotonic() + limits.notebook_timeout_s
    quota = limits.disk_mib * 2**20
    while True:
        try:
            process.wait(timeout=0.5)
            return ""
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            _kill_tree(process)
            return "time"
        if folder_bytes(root) > quota:
            _kill_tree(process)
            return "disk"


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


Verdicts = Callable[[CheckCell], referee.Verdict]
"""The referee's verdict on a check cell (its results, compared outside the kernel)."""


def score(notebook: NotebookNode, checks: list[CheckCell], run: NbvalRun,
          limits: Limits, verdict: Verdicts | None = None) -> list[CheckResult]:
    """One result per check cell; after a cell that stops the kernel, every check fails.

    A check passes when nbval ran its cell without error and, with a referee
    (``verdict``), the referee accepts it. The report counts only when pytest finished
    normally (exit code 0 or 1).
    """
    if run.stopped or run.junit is None or run.returncode not in (0, 1):
        reason = {"time": f"not run: the notebook ran past its total time limit of "
                          f"{limits.notebook_timeout_s:g} s",
                  "disk": f"not run: the submission wrote more than its disk quota of "
                          f"{limits.disk_mib:g} MiB"}.get(
            run.stopped, f"not run: pytest exited with code {run.returncode}: "
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
        elif check and outcome.passed and verdict is not None:
            judged = verdict(check)
            results.append(CheckResult(check.name, judged.passed, check.points,
                                       judged.message))
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


def reference_uses(instructor: NotebookNode, answers: Mapping[str, str],
                   tripwire: list[str]) -> dict[str, str]:
    """The checks that earn nothing for calling their reference, with the reason: named
    in an exercise cell's syntax, or seen called by the kernel's tripwire."""
    replaced = replaced_functions(instructor)
    flagged: dict[str, str] = {}
    for cell_id, found in exercise_findings(instructor, answers).items():
        for function, names in replaced.items():
            if function.rpartition(".")[2] in found.reference:
                for name in names:
                    flagged.setdefault(name, f"reference use: exercise cell {cell_id} names "
                                             f"{function}, which this exercise asks you to write")
    for function in tripwire:
        for name in replaced.get(function, ()):
            flagged.setdefault(name, f"reference use: {function} was called from the "
                                     "student's code while grading")
    return flagged


def grade_submission(submission: Submission, instructor: NotebookNode,
                     limits: Limits = Limits(), cache: Path | None = None,
                     threads: int = 1, *, seed: int = 0, sandboxed: bool = True) -> LabGrade:
    """Grade one submission; any problem with it becomes failed checks and a note.

    ``seed`` draws the hidden cases (keep it secret from students); ``sandboxed``
    False runs the kernel without bubblewrap (the grade records the mode).
    """
    mode = SANDBOX if sandboxed else PROCESS
    checks = check_cells(instructor, submission.lab)
    if submission.path is None:
        return replace(failed(submission, checks, "not submitted"), mode=mode)
    try:
        answers = read_submission(submission.path)
    except (SubmissionError, OSError) as error:
        return replace(failed(submission, checks, f"unreadable submission: {error}"), mode=mode)
    merged, missing = merge(instructor, answers)
    notes = review_notes(instructor, answers)
    if missing:
        notes.insert(0, f"cells missing from the submission (unanswered): {', '.join(missing)}")
    exercises = tuple(cell.source for cell in merged.cells if "exercise" in tags(cell))
    run = GradingRun(seed, exercises, replaced_functions(instructor), sandboxed)
    with tempfile.TemporaryDirectory(prefix="labkit-grade-", ignore_cleanup_errors=True) as name:
        root = Path(name)
        outcome = run_nbval(root, merged, limits, cache, threads, run)
        flagged = reference_uses(instructor, answers, referee.tripwire_calls(root / "results"))

        def verdict(check: CheckCell) -> referee.Verdict:
            name = CHECKS[check.call].name
            if name in flagged:
                return referee.Verdict(False, flagged[name])
            return referee.judge(check.call, root / "results", seed)

        results = score(merged, checks, outcome, limits, verdict)
    notes += sorted({reason for reason in flagged.values()} - set(notes))
    return LabGrade(submission.student, submission.lab, results,
                    question_answers(instructor, answers), notes, mode)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where there is one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def grade(submissions: Path, labs: Path, out: Path, *, jobs: int | None = None,
          limits: Limits = Limits(), cache: Path | None = None,
          on_graded: Callable[[LabGrade], None] | None = None,
          shard: Shard | None = None, sandboxed: bool = True, seed: int | None = None,
          ) -> tuple[list[LabGrade], list[str]]:
    """Grade every submission in ``submissions`` against ``labs``; write the tables.

    ``jobs`` kernels run at once (default: one per available core), each with
    ``cores // jobs`` threads. ``cache`` is a folder of pretrained ``*.pt`` files each
    kernel gets a copy of. Writes ``out`` (one row per check), ``<out>-totals.csv`` and
    ``<out>-questions.csv`` (see :func:`write_tables`). Returns the grades and what was
    ignored in ``submissions``. With a ``shard`` (:class:`~labkit.grading.shards.Shard`),
    only the students it holds are graded and written.

    Each submission runs in its own bubblewrap sandbox; when none can start here this
    raises :class:`~labkit.grading.sandbox.SandboxUnavailable` naming what to install,
    before anything is graded. ``sandboxed=False`` grades with process isolation only
    (the tables say so per row). ``seed`` draws the hidden cases (default: a fresh
    secret per run).
    """
    if sandboxed:
        sandbox.require()
    seed = secrets.randbits(31) if seed is None else seed
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
                               limits, cache, threads, seed=seed, sandboxed=sandboxed):
                   submission for submission in found}
        for future in as_completed(futures):
            submission = futures[future]
            try:
                grades.append(future.result())
            except Exception as error:  # a grader failure costs this submission only
                checks = check_cells(instructors[submission.lab], submission.lab)
                grades.append(replace(failed(submission, checks, f"grading error: {error!r}"),
                                      mode=SANDBOX if sandboxed else PROCESS))
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

    - ``out``: student, lab, check, passed, points, earned, message, mode (one row per
      check; mode ``sandbox`` or ``process``, see :func:`grade`);
    - ``<out>-totals.csv``: student, lab, earned, points, questions (how many to grade
      by hand), notes; plus one ``(all labs)`` row per student;
    - ``<out>-questions.csv``: student, lab, question (cell id), prompt, answer.
    """
    checks_path, totals_path, answers_path = table_paths(out)
    checks_rows = [(g.student, g.lab, r.check, r.passed, r.points, r.earned, r.message,
                    g.mode) for g in grades for r in g.checks]
    totals_rows = []
    for student in sorted({g.student for g in grades}):
        own = [g for g in grades if g.student == student]
        totals_rows += [(g.student, g.lab, g.earned, g.points, len(g.answers),
                         "; ".join(g.notes), g.mode) for g in own]
        totals_rows.append((student, ALL_LABS, sum(g.earned for g in own),
                            sum(g.points for g in own), sum(len(g.answers) for g in own), "",
                            "/".join(sorted({g.mode for g in own}))))
    answers_rows = [(g.student, g.lab, a.question, a.prompt, a.answer)
                    for g in grades for a in g.answers]
    write_atomically(checks_path, _csv(GRADE_COLUMNS, checks_rows))
    write_atomically(totals_path, _csv(TOTAL_COLUMNS, totals_rows))
    write_atomically(answers_path, _csv(ANSWER_COLUMNS, answers_rows))
    return checks_path, totals_path, answers_path
