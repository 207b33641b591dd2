"""The referee: verdicts computed outside the sandbox.

In grading mode a check cell only writes the student's outcomes on the public and the
hidden cases (:func:`labkit.grading.checks.core.record`). After the sandbox has ended,
the referee reads each results file back as plain data (``torch.load`` with
``weights_only=True``), computes the reference's outcomes on the same cases itself (the
hidden ones from the run's secret seed) and compares them with the check's own
comparison. A check earns its points only when every case agrees, nbval ran its cell
without error, and no exercise called the reference it replaces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from labkit.grading.checks import CHECKS
from labkit.grading.checks.core import (
    Check,
    CheckError,
    all_cases,
    expected_outcome,
    outcome_kind,
)

MAX_RESULTS_BYTES = 64 * 2**20
TRIPWIRE_LOG = "tripwire.jsonl"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    message: str = ""


def check_of(call: str) -> Check:
    """The declaration behind ``checks.<call>(...)``; KeyError names the unknown call."""
    if call not in CHECKS:
        raise KeyError(f"no check named {call!r}; known: {', '.join(sorted(CHECKS))}")
    return CHECKS[call]


@lru_cache(maxsize=64)
def expected_outcomes(call: str, seed: int) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The case names and the reference's outcomes of a check for ``seed`` (computed
    once per grading process and seed)."""
    check = check_of(call)
    cases = all_cases(check, seed)
    return tuple(case.name for case in cases), tuple(expected_outcome(check, case)
                                                     for case in cases)


def _read_results(path: Path) -> dict:
    if path.is_symlink() or not path.is_file():
        raise ValueError("no results were recorded (the check cell did not run to its end)")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise ValueError(f"the results file has more than {MAX_RESULTS_BYTES:,} bytes")
    try:
        results = torch.load(path, weights_only=True)
    except Exception as error:  # whatever a forged or truncated file makes torch raise
        raise ValueError(f"the results file is unreadable ({type(error).__name__})") from error
    if not (isinstance(results, dict) and isinstance(results.get("cases"), list)
            and isinstance(results.get("outcomes"), list)
            and len(results["cases"]) == len(results["outcomes"])):
        raise ValueError("the results file does not hold one outcome per case")
    return results


def judge(call: str, results_dir: Path, seed: int) -> Verdict:
    """The verdict on one check cell from its results file."""
    check = check_of(call)
    try:
        results = _read_results(Path(results_dir) / f"{check.name}.pt")
    except ValueError as error:
        return Verdict(False, str(error))
    if results.get("labkit_function"):
        return Verdict(False, f"the check was given labkit's own function (from "
                              f"{results['labkit_function']}), not the student's")
    try:
        names, expected = expected_outcomes(call, seed)
    except CheckError as error:
        return Verdict(False, f"grader fault, not the student's: {error}")
    if tuple(results["cases"]) != names:
        return Verdict(False, "the recorded cases are not the check's cases")
    if any(outcome_kind(outcome) == "Unfinished" for outcome in results["outcomes"]):
        return Verdict(False, f"{check.name}: not implemented yet")
    failures = [(name, problem) for name, want, got in zip(names, expected, results["outcomes"],
                                                           strict=True)
                if (problem := check.compare(want, got))]
    if not failures:
        return Verdict(True)
    name, problem = failures[0]
    others = f" ({len(failures) - 1} more of {len(names)} cases failed too)" \
        if len(failures) > 1 else ""
    return Verdict(False, f"{check.name}: case {name!r} failed: {problem}{others}")


def tripwire_calls(results_dir: Path) -> list[str]:
    """The qualified names of the reference functions the tripwire saw called."""
    path = Path(results_dir) / TRIPWIRE_LOG
    if path.is_symlink() or not path.is_file():
        return []
    calls = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[:1000]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("function"), str):
            calls.append(entry["function"])
    return calls
