"""What grading passes from stage to stage: plain, frozen records.

A submission (:class:`Submission`) goes in; a :class:`LabGrade` (one
:class:`CheckResult` per check cell, the :class:`Answer` to each question, notes and the
isolation mode it ran in) comes out. :class:`GradingConfig` holds everything a run is
configured by (limits, cache, threads, the hidden-case secret, the isolation mode), so no
stage threads those through its own signature. :class:`Shard` names a share of a class.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

BWRAP, CONTAINER, PROCESS = "bwrap", "container", "process"
MODES = (BWRAP, CONTAINER, PROCESS)
"""The isolation modes, strongest first (see :mod:`labkit.grading.isolation`)."""


@dataclass(frozen=True)
class Limits:
    """What one submission may use.

    ``cell_timeout_s``: wall time of one cell (nbval interrupts it);
    ``notebook_timeout_s``: wall time of the whole run (then every process is killed);
    ``memory_gib``: memory of the submission: the address space of each process
    (``RLIMIT_AS``) and the resident memory of all its processes together (a memory
    cgroup where the grader may make one, else summed by the watcher);
    ``file_size_mib``: largest file a process may write (``RLIMIT_FSIZE``);
    ``disk_mib``: what the submission may store in all, in blocks: its scratch folder
    (watched; past it every process is killed), its ``/tmp`` and its ``/dev/shm``;
    ``files``: how many files and folders the scratch folder may hold (inodes);
    ``processes``: processes and threads of the submission, its own only (a pids cgroup
    where the grader may make one, else ``RLIMIT_NPROC`` over a fresh user id or over the
    account's current count).
    The CPU time limit (``RLIMIT_CPU``) is the notebook timeout times the threads.
    """

    cell_timeout_s: float = 120
    notebook_timeout_s: float = 900
    memory_gib: float = 4
    file_size_mib: float = 256
    disk_mib: float = 1024
    files: int = 100_000
    processes: int = 256

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{limit.name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class GradingConfig:
    """One grading run's settings.

    ``secret``: the bytes the hidden cases of each submission derive from, with the
    student and the lab (:func:`labkit.grading.seeds.hidden_seed`); ``isolation``: one of
    :data:`MODES`, or None for the strongest this machine allows; ``cache``: a folder of
    pretrained ``*.pt`` files each kernel gets a copy of; ``threads``: per kernel.
    """

    limits: Limits = Limits()
    secret: bytes = b""
    isolation: str | None = None
    cache: Path | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.isolation is not None and self.isolation not in MODES:
            raise ValueError(f"isolation must be one of {', '.join(MODES)}, "
                             f"got {self.isolation!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {self.threads!r}")


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
    """Everything the grader found out about one submission.

    ``notes`` are for the instructor (review flags, what was missing); ``problem`` is
    set when the grader, not the student, failed (a sandbox refused, a limit of the
    machine): such a grade is not the student's, and a run where every grade has one
    fails as a whole.
    """

    student: str
    lab: str
    checks: list[CheckResult]
    answers: list[Answer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mode: str = BWRAP
    problem: str = ""

    @property
    def earned(self) -> int:
        return sum(result.earned for result in self.checks)

    @property
    def points(self) -> int:
        return sum(result.points for result in self.checks)


class SubmissionError(ValueError):
    """A submitted file is not a readable notebook."""


_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    r"""Shard ``index`` of ``count`` (``1 <= index <= count``), written ``index/count``.

    Shard ``I/N`` holds the students whose id hashes to ``I``:

    .. math::

        \text{shard}(s) = 1 + \big(\text{int}(\text{SHA-256}(s)[{:}8]) \bmod N\big)

    SHA-256 rather than Python's ``hash()``, which is salted per process: every machine,
    every rerun and every later run with students added puts a student in the same shard.
    """

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
        match = _SHARD.fullmatch(spec) if isinstance(spec, str) else None
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
