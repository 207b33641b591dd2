"""Scoring: nbval's report and the referee's verdicts become one result per check.

A check earns its points when nbval ran its cell without error (``Cell N`` of the junit
report, N counting code cells), the referee accepts every case
(:mod:`labkit.grading.referee`), and neither the exercise cells' syntax
(:mod:`labkit.grading.inspection`) nor the kernel's tripwire (:mod:`labkit.grading.kernel`)
shows a call of the reference the exercise replaces. A cell that times out or a kernel
that dies fails every check after it. Everything read here was written by the
submission's processes and is read as untrusted (:mod:`labkit.grading.untrusted`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

from nbformat import NotebookNode

from labkit.grading import referee
from labkit.grading.nbval_plugin import KERNEL_DIED
from labkit.grading.records import CheckCell, CheckResult, LabGrade, Limits, Submission
from labkit.grading.release import tags
from labkit.grading.submissions import exercise_findings, replaced_functions
from labkit.grading.untrusted import clean_text


@dataclass(frozen=True)
class NbvalRun:
    """What one pytest run left behind: the junit XML (None if none), the log tail, and
    why it was stopped (``"time"``, ``"disk"``, ``"memory"``, ``"cores"`` or ``""``)."""

    junit: str | None
    returncode: int
    log_tail: str
    stopped: str = ""

    @property
    def timed_out(self) -> bool:
        return self.stopped == "time"


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
    if KERNEL_DIED in report:
        return CellOutcome(False, "the kernel died while running this cell", stops=True)
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
            found = _outcome(problem.text or problem.get("message", ""), cell_timeout_s)
            outcome = CellOutcome(found.passed, clean_text(found.message), found.stops)
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
                  "disk": f"not run: the submission stored more than its disk quota of "
                          f"{limits.disk_mib:g} MiB or {limits.files:,} files",
                  "memory": f"not run: the submission's processes used more than "
                            f"{limits.memory_gib:g} GiB of memory together",
                  "cores": "not run: the submission's processes left the CPU cores of "
                           "their grading job"}.get(
            run.stopped, f"not run: pytest exited with code {run.returncode}: "
                         f"{run.log_tail.strip()[-300:]}")
        return [CheckResult(check.name, False, check.points, clean_text(reason))
                for check in checks]
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


def failed(submission: Submission, checks: list[CheckCell], reason: str,
           problem: str = "") -> LabGrade:
    """Every check failed for ``reason``, which is also the submission's note; with a
    ``problem``, the grader's fault rather than the student's."""
    return LabGrade(submission.student, submission.lab,
                    [CheckResult(check.name, False, check.points, reason) for check in checks],
                    notes=[reason], problem=problem)


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

