r"""Similarity: which students handed in the same code, exercise by exercise.

An autograder catches wrong code, not shared code. For every exercise cell of a lab, the
code of every pair of students is compared with copydetect's winnowed fingerprints, the
method of MOSS (Schleimer, Wilkerson and Aiken, *Winnowing: local algorithms for document
fingerprinting*, SIGMOD 2003). The code is first tokenized and every name replaced by
one symbol, so renaming variables changes nothing; the fingerprints are the hashes of
its ``noise``-character k-grams, so moving a line moves its fingerprints along with it.
For the two cells A and B of a pair,

.. math::

    \text{similarity}(A) = \frac{\#\{\text{tokens of } A \text{ in fingerprints shared
    with } B\}}{\#\{\text{fingerprinted tokens of } A\}}

and a pair is ranked by the larger of the two. The released stub and the instructor's
solution are *boilerplate*: their fingerprints are removed before comparing students,
so signatures, docstrings and the model answer count for nothing. Each student is also
compared with the instructor's solution (with the stub alone as boilerplate) and with
labkit's own source of every function the exercise replaces (with the stub and the
solution as boilerplate), so a pasted solution, or labkit's published reference pasted
in, is flagged against it.

With the default window of 1 every k-gram is a fingerprint: no winnowing choice depends
on copydetect's hash values (Python's salted ``hash``), so a report is reproducible.
"""

from __future__ import annotations

import csv
import html
import importlib
import inspect
import io
import itertools
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from copydetect import CodeFingerprint, compare_files
from copydetect.utils import highlight_overlap

from labkit.grading.checks import CHECKS
from labkit.grading.records import SubmissionError
from labkit.grading.release import release_notebook, tags, write_atomically
from labkit.grading.submissions import find_submissions, lab_names, load_labs, read_submission

SOLUTION = "(instructor solution)"
LABKIT = "(labkit {})"
"""How a match with labkit's published reference of the exercise is named."""
CSV_COLUMNS = ("lab", "cell", "student_a", "student_b", "similarity", "similarity_a",
               "similarity_b", "overlap_tokens", "flagged")


@dataclass(frozen=True)
class Match:
    """One pair's shared code in one exercise cell; ``second`` may be :data:`SOLUTION`
    or labkit's reference (:data:`LABKIT`)."""

    lab: str
    cell: str
    first: str
    second: str
    similarity_first: float
    similarity_second: float
    overlap: int
    first_code: str
    second_code: str
    first_slices: tuple[tuple[int, int], ...]
    second_slices: tuple[tuple[int, int], ...]

    @property
    def similarity(self) -> float:
        return max(self.similarity_first, self.similarity_second)


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")


def fingerprint(code: str, noise: int, window: int,
                boilerplate: Iterable[int] = ()) -> CodeFingerprint:
    """copydetect's fingerprint of Python ``code``, without the ``boilerplate`` hashes."""
    return CodeFingerprint("cell.py", noise, window, boilerplate=np.array(sorted(boilerplate)),
                           language="python", fp=io.StringIO(code))


def _lines(code: str) -> set[str]:
    return {line.strip() for line in code.splitlines() if line.strip()}


def _without(code: str, lines: set[str]) -> str:
    """``code`` with every line that is one of ``lines`` (stripped) blanked out.

    Blanked, not removed, so positions in the result are positions in ``code``.
    """
    return "\n".join(" " * len(line) if line.strip() in lines else line
                     for line in code.split("\n"))


def _slices(array: np.ndarray) -> tuple[tuple[int, int], ...]:
    return tuple((int(start), int(end)) for start, end in np.asarray(array).T.reshape(-1, 2))


def _match(lab: str, cell: str, first: tuple[str, str, CodeFingerprint],
           second: tuple[str, str, CodeFingerprint]) -> Match:
    overlap, (similarity_a, similarity_b), (slices_a, slices_b) = compare_files(
        first[2], second[2])
    return Match(lab, cell, first[0], second[0], float(similarity_a), float(similarity_b),
                 int(overlap), first[1], second[1], _slices(slices_a), _slices(slices_b))


def reference_sources(notebook) -> dict[str, dict[str, str]]:
    """labkit's source of each function an exercise cell replaces (named by the check
    cells after it, up to the next exercise), by exercise cell id and qualified name."""
    sources: dict[str, dict[str, str]] = {}
    exercise = None
    for cell in notebook.cells:
        if "exercise" in tags(cell):
            exercise = cell.id
            sources[exercise] = {}
        elif "check" in tags(cell) and exercise is not None:
            for call in re.findall(r"\b(check_\w+)\s*\(", cell.source):
                for name in CHECKS[call].replaces if call in CHECKS else ():
                    module, _, function = name.rpartition(".")
                    found = inspect.unwrap(getattr(importlib.import_module(module), function))
                    sources[exercise][name] = inspect.getsource(found)
    return sources


def compare(submissions: Path, labs: Path, *, noise: int = 25,
            window: int = 1) -> tuple[list[Match], list[str]]:
    """Every pair of students (and each student with the solution), per exercise cell.

    ``submissions`` and ``labs`` as in :func:`~labkit.grading.grade.grade`; ``noise``
    is the k-gram length in filtered characters (shorter shared code is noise),
    ``window`` the winnowing window. Unanswered cells (the stub) are left out. Returns
    the matches with any shared fingerprint, most similar first, and what was left out.
    """
    for name, value in (("noise", noise), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    found, ignored = find_submissions(submissions, lab_names(labs))
    handed_in = [submission for submission in found if submission.path is not None]
    if not handed_in:
        raise ValueError(f"submissions must hold notebooks of the labs in {str(labs)!r}, "
                         f"{str(submissions)!r} has none")
    instructors = load_labs(labs, {submission.lab for submission in handed_in})
    answers: dict[str, dict[str, dict[str, str]]] = {lab: {} for lab in instructors}
    for submission in handed_in:
        try:
            answers[submission.lab][submission.student] = read_submission(submission.path)
        except (SubmissionError, OSError) as error:
            ignored.append(f"{submission.path}: {error}")
    matches = []
    for lab, instructor in instructors.items():
        released = release_notebook(instructor)
        references = reference_sources(instructor)
        for cell, stub in zip(instructor.cells, released.cells, strict=True):
            if "exercise" not in tags(cell):
                continue
            stub_hashes = fingerprint(stub.source, noise, window).hashes
            both = stub_hashes | fingerprint(cell.source, noise, window).hashes
            stub_lines = _lines(stub.source)
            codes = {student: sources[cell.id] for student, sources in answers[lab].items()
                     if sources.get(cell.id, "").strip() not in ("", stub.source.strip())}
            pairs = [(student, code, fingerprint(
                         _without(code, stub_lines | _lines(cell.source)), noise, window, both))
                     for student, code in sorted(codes.items())]
            alone = [(student, code, fingerprint(_without(code, stub_lines), noise, window,
                                                 stub_hashes))
                     for student, code in sorted(codes.items())]
            solution = (SOLUTION, cell.source, fingerprint(
                _without(cell.source, stub_lines), noise, window, stub_hashes))
            candidates = [_match(lab, cell.id, a, b) for a, b in itertools.combinations(pairs, 2)]
            candidates += [_match(lab, cell.id, student, solution) for student in alone]
            candidates += [_match(lab, cell.id, student, (LABKIT.format(name), source,
                                                          fingerprint(source, noise, window,
                                                                      both)))
                           for name, source in references[cell.id].items()
                           for student in pairs]
            matches += [match for match in candidates if match.overlap > 0]
    matches.sort(key=lambda m: (-m.similarity, m.lab, m.cell, m.first, m.second))
    return matches, ignored


def _highlighted(code: str, slices: tuple[tuple[int, int], ...]) -> str:
    if not slices:
        return html.escape(code)
    marked, _ = highlight_overlap(code, np.array(slices).T, "<mark>", "</mark>",
                                  escape_html=True)
    return marked


def report_html(matches: list[Match], threshold: float, title: str) -> str:
    """The pairs at or above ``threshold``, both cells side by side, shared code marked."""
    flagged = [match for match in matches if match.similarity >= threshold]
    sections = []
    for match in flagged:
        sections.append(
            f"<section><h2>{html.escape(match.lab)}, cell {html.escape(match.cell)}: "
            f"{html.escape(match.first)} and {html.escape(match.second)}, "
            f"{100 * match.similarity:.0f}%</h2><div class=pair>"
            f"<div><h3>{html.escape(match.first)} ({100 * match.similarity_first:.0f}% "
            f"shared)</h3><pre>{_highlighted(match.first_code, match.first_slices)}</pre></div>"
            f"<div><h3>{html.escape(match.second)} ({100 * match.similarity_second:.0f}% "
            f"shared)</h3><pre>{_highlighted(match.second_code, match.second_slices)}</pre>"
            f"</div></div></section>")
    body = "\n".join(sections) or f"<p>No pair reaches {100 * threshold:.0f}%.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }}
pre {{ background: #f6f6f6; padding: 0.5em; overflow-x: auto; }}
mark {{ background: #ffd54f; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(flagged)} of {len(matches)} pairs with shared code reach {100 * threshold:.0f}%
(copydetect winnowing; the stub and the instructor's solution do not count between
students). Shared code is marked. A high score is a reason to look, not a verdict.</p>
{body}
</body></html>
"""


def report_csv(matches: list[Match], threshold: float) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows((m.lab, m.cell, m.first, m.second, f"{m.similarity:.3f}",
                      f"{m.similarity_first:.3f}", f"{m.similarity_second:.3f}", m.overlap,
                      m.similarity >= threshold) for m in matches)
    return buffer.getvalue()


def similarity_report(submissions: Path, labs: Path, out: Path, *, noise: int = 25,
                      window: int = 1, threshold: float = 0.5
                      ) -> tuple[Path, Path, list[Match], list[str]]:
    """Write ``out`` (HTML, ``.html``) and the CSV of every pair beside it (``.csv``).

    Returns both paths, the matches and what was left out; nothing is written when the
    input is refused.
    """
    out = Path(out)
    if out.suffix != ".html":
        raise ValueError(f"out must be an .html file, got {str(out)!r}")
    _check_threshold(threshold)
    matches, ignored = compare(submissions, labs, noise=noise, window=window)
    table = out.with_suffix(".csv")
    page = report_html(matches, threshold, f"Similarity of {Path(submissions).name}")
    write_atomically(table, report_csv(matches, threshold))
    write_atomically(out, page)
    return out, table, matches, ignored
