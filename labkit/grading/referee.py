"""The referee: verdicts computed outside the sandbox, in a process of their own.

In grading mode a check cell only writes the student's outcomes on the public and the
hidden cases (:func:`labkit.grading.checks.core.record`). After the sandbox has ended,
the referee reads each results file back as plain data (``torch.load`` with
``weights_only=True``), computes the reference's outcomes on the same cases itself (the
hidden ones from the run's secret seed) and compares them with the check's own
comparison. A check earns its points only when every case agrees, nbval ran its cell
without error, and no exercise called the reference it replaces.

Results files are untrusted: read without following links, regular files only, with a
size bound (:mod:`labkit.grading.untrusted`). Judging them runs in a process of its own
(:func:`judge_apart`) with memory and time limits, so an outcome built to explode when
compared or shown costs its submission one message, never the grading run.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
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
from labkit.grading.untrusted import UntrustedFileError, clean_text, read_bytes, read_text

MAX_RESULTS_BYTES = 64 * 2**20
MAX_TRIPWIRE_BYTES = 2**20
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
    try:
        raw = read_bytes(path, MAX_RESULTS_BYTES)
    except UntrustedFileError as error:
        missing = not path.exists() and not path.is_symlink()
        raise ValueError("no results were recorded (the check cell did not run to its end)"
                         if missing else f"the results file is refused: {error}") from error
    try:
        results = torch.load(io.BytesIO(raw), weights_only=True)
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
    try:
        text = read_text(Path(results_dir) / TRIPWIRE_LOG, MAX_TRIPWIRE_BYTES, tail=True)
    except UntrustedFileError:
        return []
    calls = []
    for line in text.splitlines()[:1000]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("function"), str):
            calls.append(entry["function"])
    return calls


def judge_all(calls: list[str], results_dir: Path, seed: int) -> dict[str, Verdict]:
    """The verdict on each check call, every message cleaned and bounded."""
    verdicts = {}
    for call in calls:
        verdict = judge(call, results_dir, seed)
        verdicts[call] = Verdict(verdict.passed, clean_text(verdict.message))
    return verdicts


REFEREE_MEMORY_BYTES = 4 * 2**30
REFEREE_TIMEOUT_S = 300


def _limit_referee() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (REFEREE_MEMORY_BYTES, REFEREE_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (REFEREE_TIMEOUT_S, REFEREE_TIMEOUT_S))


def judge_apart(calls: list[str], results_dir: Path, seed: int,
                env: dict[str, str] | None = None) -> dict[str, Verdict]:
    """:func:`judge_all` in a fresh process with memory and time limits; should that
    process fail, every call gets a verdict saying so (the run goes on)."""
    request = json.dumps({"calls": calls, "results": str(results_dir), "seed": seed})
    try:
        finished = subprocess.run([sys.executable, "-m", "labkit.grading.referee"],
                                  input=request.encode(), capture_output=True, env=env,
                                  timeout=REFEREE_TIMEOUT_S, preexec_fn=_limit_referee)
        answer = json.loads(finished.stdout.decode("utf-8"))
        return {call: Verdict(bool(answer[call][0]), str(answer[call][1])) for call in calls}
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError,
            TypeError) as error:
        reason = (f"the referee could not judge these results ({type(error).__name__}); "
                  "they were built to exhaust its memory or time, or the grader failed")
        return {call: Verdict(False, reason) for call in calls}


def main() -> None:
    """Read a request (JSON on stdin), write the verdicts (JSON on stdout)."""
    request = json.loads(sys.stdin.read())
    verdicts = judge_all(request["calls"], Path(request["results"]), int(request["seed"]))
    json.dump({call: [verdict.passed, verdict.message] for call, verdict in verdicts.items()},
              sys.stdout)


if __name__ == "__main__":
    main()
