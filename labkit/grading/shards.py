r"""Shards: grade one class on several machines, then merge the partial tables.

A cluster grades a class in the time one machine grades a share of it. Shard ``I/N``
(``1 <= I <= N``) holds the students whose id hashes to ``I``:

.. math::

    \text{shard}(s) = 1 + \big(\text{int}(\text{SHA-256}(s)[{:}8]) \bmod N\big)

SHA-256 rather than Python's ``hash()``, which is salted per process: every machine,
every rerun and every later run with students added puts a student in the same shard.
Each shard writes the same three tables an unsharded run writes, for its students only,
plus ``<out>-part.json``: the shard, digests of the labs and of the class it graded, and
the grades themselves. :func:`merge_parts` checks that the parts are the ``N`` shards of
one run (same labs, same class, each shard once) and writes the three tables of the
whole class, identical to those of an unsharded run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.grading.grade import (
    Answer,
    CheckResult,
    LabGrade,
    Submission,
    find_submissions,
    grade,
    lab_names,
    table_paths,
    write_tables,
)
from labkit.grading.release import write_atomically

PART_FORMAT = "labkit-grade-part/1"
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``1 <= index <= count``), written ``index/count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        for name in ("index", "count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"shard {name} must be an int >= 1, got {value!r}")
        if self.index > self.count:
            raise ValueError(f"shard must be I/N with 1 <= I <= N, got {self}")

    @classmethod
    def parse(cls, spec: str) -> Shard:
        """``"2/4"`` -> ``Shard(2, 4)``; anything else is a ValueError naming the spec."""
        match = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
        if not match:
            raise ValueError(f"shard must be I/N with integers 1 <= I <= N, got {spec!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if not 1 <= index <= count:
            raise ValueError(f"shard must be I/N with 1 <= I <= N, got {spec!r}")
        return cls(index, count)

    def holds(self, student: str) -> bool:
        """Whether ``student`` belongs to this shard."""
        return shard_of(student, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(student: str, count: int) -> int:
    """The shard in ``1..count`` of ``student``: ``1 + int(SHA-256(student)[:8]) mod count``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    digest = hashlib.sha256(student.encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:8], "big") % count


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


def grade_shard(submissions: Path, labs: Path, out: Path, shard: Shard,
                **options) -> tuple[list[LabGrade], list[str]]:
    """Grade the students of ``shard`` with :func:`~labkit.grading.grade.grade`.

    ``options`` go to ``grade`` (``jobs``, ``limits``, ``cache``, ``on_graded``). Writes
    the shard's tables at ``out`` and its manifest (:func:`part_path`). Raises
    ValueError, writing nothing, when ``submissions`` holds no notebook of the labs (a
    shard may hold no student; the class may not).
    """
    found, _ = find_submissions(submissions, lab_names(labs))
    if not found:
        raise ValueError(f"submissions must hold notebooks of the labs in {str(labs)!r}, "
                         f"{str(submissions)!r} has none")
    grades, ignored = grade(submissions, labs, out, shard=shard, **options)
    write_part(grades, out, shard, str(labs), labs_digest(labs), class_digest(found))
    return grades, ignored


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
