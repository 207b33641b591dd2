"""The grade tables, written by the grader alone, atomically and safe to open; and the
parts of a sharded run.

Three CSV tables per run (:func:`write_tables`). Every text cell is cleaned of control
characters and terminal escapes and capped (:func:`~labkit.grading.untrusted.clean_text`),
and a cell beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
prefixed with ``'`` so that no spreadsheet evaluates it as a formula (OWASP, "CSV
Injection"). Numbers are written by the grader and need no escape.

A cluster grades a class in the time one machine grades a share of it: each shard
(:class:`~labkit.grading.records.Shard`) writes the same three tables for its students,
plus ``<out>-part.json``: the shard, digests of the labs and of the class it graded, and
the grades themselves. :func:`merge_parts` checks that the parts are the ``N`` shards of
one run (same labs, same class, each shard once) and writes the three tables of the
whole class, identical to those of an unsharded run.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from labkit.grading.records import Answer, CheckResult, LabGrade, Shard, Submission, shard_of
from labkit.grading.release import write_atomically
from labkit.grading.submissions import lab_names
from labkit.grading.untrusted import clean_text

GRADE_COLUMNS = ("student", "lab", "check", "passed", "points", "earned", "message", "mode")
TOTAL_COLUMNS = ("student", "lab", "earned", "points", "questions", "notes", "mode")
ANSWER_COLUMNS = ("student", "lab", "question", "prompt", "answer")
ALL_LABS = "(all labs)"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PART_FORMAT = "labkit-grade-part/1"
MAX_ANSWER_CHARS = 20_000


def safe_cell(value: object, limit: int | None = None) -> object:
    """A table cell that no spreadsheet evaluates and no terminal interprets: text
    cleaned and capped, ``'`` before a leading ``= + - @``, tab or carriage return."""
    if not isinstance(value, str):
        return value
    text = clean_text(value, limit) if limit else clean_text(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def table_paths(out: Path) -> tuple[Path, Path, Path]:
    """``grades.csv`` -> (``grades.csv``, ``grades-totals.csv``, ``grades-questions.csv``)."""
    out = Path(out)
    return out, out.with_name(f"{out.stem}-totals.csv"), out.with_name(f"{out.stem}-questions.csv")


def _csv(columns: tuple[str, ...], rows: Iterable[tuple], limit: int | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(tuple(safe_cell(value, limit) for value in row) for row in rows)
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
    write_atomically(answers_path, _csv(ANSWER_COLUMNS, answers_rows, MAX_ANSWER_CHARS))
    return checks_path, totals_path, answers_path


def part_path(out: Path) -> Path:
    """``grades-2.csv`` -> ``grades-2-part.json``, the manifest of a shard's tables."""
    out = Path(out)
    return out.with_name(f"{out.stem}-part.json")


def labs_digest(labs: Path) -> str:
    """SHA-256 over the names and bytes of the instructor notebooks in ``labs``."""
    digest = hashlib.sha256()
    for name in lab_names(labs):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256((Path(labs) / f"{name}.ipynb").read_bytes()).digest())
    return digest.hexdigest()


def class_digest(submissions: Iterable[Submission]) -> str:
    """SHA-256 over every (student, lab) to grade, of all shards: the class a run graded."""
    pairs = sorted(f"{submission.student}\0{submission.lab}" for submission in submissions)
    return hashlib.sha256("\n".join(pairs).encode("utf-8")).hexdigest()


def write_part(grades: Sequence[LabGrade], out: Path, shard: Shard, labs: str,
               labs_sha256: str, class_sha256: str) -> tuple[Path, ...]:
    """Write a shard's three tables and its ``-part.json``; returns the four paths."""
    tables = write_tables(sorted(grades, key=lambda g: (g.student, g.lab)), out)
    manifest = {
        "format": PART_FORMAT, "shard": str(shard), "index": shard.index,
        "count": shard.count, "labs": labs, "labs_sha256": labs_sha256,
        "class_sha256": class_sha256, "table": Path(out).name,
        "grades": [dataclasses.asdict(g) for g in grades],
    }
    path = part_path(out)
    write_atomically(path, json.dumps(manifest, indent=1) + "\n")
    return (*tables, path)


def _read_part(path: Path) -> dict:
    manifest = path if path.suffix == ".json" else part_path(path)
    if not manifest.is_file():
        raise ValueError(f"parts: {str(path)!r} has no {manifest.name} beside it; "
                         "give the tables written by labkit grade --shard I/N")
    try:
        part = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"parts: {str(manifest)!r} is not a readable part: {error}") from error
    if not isinstance(part, dict) or part.get("format") != PART_FORMAT:
        raise ValueError(f"parts: {str(manifest)!r} is not a part of format {PART_FORMAT}")
    return {**part, "path": str(path), "table_path": manifest.with_name(part["table"])}


def _lab_grade(row: dict) -> LabGrade:
    return LabGrade(**{**row, "checks": [CheckResult(**result) for result in row["checks"]],
                       "answers": [Answer(**answer) for answer in row["answers"]]})


def merge_parts(parts: Sequence[Path], out: Path) -> tuple[Path, Path, Path]:
    """Join the tables of the ``N`` shards of one run into the tables of the whole class.

    ``parts`` are the shards' ``--out`` tables (or their ``-part.json``). Refuses, writing
    nothing, parts of different shard counts, labs (by content) or classes, a shard given
    twice, a missing shard, and an ``out`` that would overwrite a part's table.
    """
    if not parts:
        raise ValueError("parts must name at least one partial table, got none")
    read = [_read_part(Path(path)) for path in parts]
    first = read[0]
    for part in read[1:]:
        for key, what in (("count", "shard counts"), ("labs_sha256", "labs folders"),
                          ("class_sha256", "submission folders")):
            if part[key] != first[key]:
                raise ValueError(
                    f"parts: graded with different {what}: {first['path']} (shard "
                    f"{first['shard']}, labs {first['labs']!r}) and {part['path']} (shard "
                    f"{part['shard']}, labs {part['labs']!r})")
    by_index: dict[int, dict] = {}
    for part in read:
        if part["index"] in by_index:
            raise ValueError(f"parts: shard {part['shard']} given twice: "
                             f"{by_index[part['index']]['path']} and {part['path']}")
        by_index[part["index"]] = part
    missing = [f"{index}/{first['count']}" for index in range(1, first["count"] + 1)
               if index not in by_index]
    if missing:
        raise ValueError(f"parts: shards {', '.join(missing)} missing (given: "
                         f"{', '.join(p['shard'] for p in read)})")
    written = {path.resolve() for part in read for path in table_paths(part["table_path"])}
    if any(path.resolve() in written for path in table_paths(out)):
        raise ValueError(f"out must not overwrite a part's table, got {str(out)!r}")
    grades = []
    for part in read:
        shard = Shard(part["index"], part["count"])
        for row in part["grades"]:
            if not shard.holds(row["student"]):
                raise ValueError(f"parts: {part['path']} holds {row['student']!r}, who "
                                 f"belongs to shard {shard_of(row['student'], shard.count)}"
                                 f"/{shard.count}, not {shard}")
            grades.append(_lab_grade(row))
    return write_tables(sorted(grades, key=lambda g: (g.student, g.lab)), out)
