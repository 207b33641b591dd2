"""What runs in a graded kernel before any cell: the tripwire on the reference.

The grader writes a startup file into the sandbox's IPython profile that calls
:func:`install`. Each labkit function that the lab's exercises ask the student to write
(a check's ``replaces``) is wrapped so that a call is logged when it comes from an
exercise cell (a frame whose file is that cell's, as ipykernel names it from the cell's
source) or while that check records the student's outcomes. The log is a JSON-lines
file in the results folder; the referee reads it after the sandbox has ended and gives
the affected checks nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from labkit.grading.checks import core


def _exercise_files(sources: Iterable[str]) -> frozenset[str]:
    from ipykernel.compiler import get_file_name

    return frozenset(get_file_name(source) for source in sources)


def _log(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())


def _tripwire(original: Callable, qualified: str, checks: frozenset[str],
              cells: frozenset[str], log: Path) -> Callable:
    seen: set[str] = set()

    def guarded(*args, **kwargs):
        frame, where = sys._getframe(1), None
        while frame is not None and where is None:
            if frame.f_code.co_filename in cells:
                where = "an exercise cell"
            frame = frame.f_back
        if where is None and core.recording in checks:
            where = f"the {core.recording} check's run of the student's function"
        if where is not None and where not in seen:
            seen.add(where)
            _log(log, {"function": qualified, "where": where})
        return original(*args, **kwargs)

    guarded.__name__, guarded.__doc__ = original.__name__, original.__doc__
    guarded.__module__ = original.__module__
    return guarded


def install(settings: Path) -> None:
    """Wrap the functions ``settings`` (JSON: ``replaces`` {qualified name: [checks]},
    ``exercises`` [sources], ``log`` path) names, in their modules."""
    config = json.loads(Path(settings).read_text(encoding="utf-8"))
    cells = _exercise_files(config["exercises"])
    log = Path(config["log"])
    for qualified, checks in config["replaces"].items():
        module_name, _, name = qualified.rpartition(".")
        module = importlib.import_module(module_name)
        setattr(module, name, _tripwire(getattr(module, name), qualified,
                                        frozenset(checks), cells, log))
