"""Results on disk: one JSON file per comparison, and one markdown file of all the tables.

``results.md`` is rebuilt from every ``<name>.json`` in the results folder, so a run of
one comparison (``--only masks``) updates its tables and keeps the others. Each
comparison's tables sit between ``<!-- name:start -->`` and ``<!-- name:end -->``
lines, which the book's performance appendix includes one by one (MyST ``{include}``
with ``:start-after:`` and ``:end-before:``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

MACHINE = "machine"


def start_marker(name: str) -> str:
    return f"<!-- {name}:start -->"


def end_marker(name: str) -> str:
    return f"<!-- {name}:end -->"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def milliseconds(latency: Mapping[str, float]) -> str:
    """A timing as ``median (IQR)`` in ms, three significant digits."""
    return f"{latency['median_ms']:.3g} ({latency['iqr_ms']:.2g})"


def ratio(value: float) -> str:
    return f"{value:.2f}×"


def percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def write_json(payload: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def read_results(folder: Path, names: Sequence[str]) -> dict[str, dict]:
    """The payload of every comparison in ``names`` that has a JSON file in ``folder``."""
    paths = {name: folder / f"{name}.json" for name in names}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}


def machine_table(machine: Mapping[str, object]) -> str:
    rows = [
        ("CPU", f"{machine['cpu']} ({machine['cores']} cores)"),
        ("threads", f"{machine['threads']} (fixed for every timing; torch's default here: "
                    f"{machine['torch_default_threads']})"),
        ("torch", machine["torch"]),
        ("torch-pruning", machine["torch_pruning"] or "not installed"),
        ("labkit", machine["labkit"]),
        ("Python", machine["python"]),
    ]
    return table(("machine", ""), rows)


def provenance(payload: Mapping[str, object]) -> str:
    """One line: when the comparison ran, how long it took, how busy the machine was."""
    machine = payload["machine"]
    load = ", ".join(f"{value:.1f}" for value in machine["load_average"])
    return (f"*Measured {machine['date']} in {payload['wall_s']:.0f} s, "
            f"{machine['threads']} thread(s); load average at the start {load}.*")


def markdown(results: Mapping[str, dict], titles: Mapping[str, str],
             render: Mapping[str, Callable[[dict], str]]) -> str:
    """``results.md``: the machine, then each comparison's tables between its markers.

    ``titles`` names every comparison in order (their numbers); ``render`` turns a
    comparison's results into its markdown.
    """
    first = next(iter(results.values()))
    parts = ["# Benchmark results", "",
             "Written by `python -m benchmarks.run` (`make bench`) from the JSON files beside "
             "this one. Timings: median (inter-quartile range) in ms; a ratio above 1× means "
             "the second of the two is faster.", "",
             start_marker(MACHINE), machine_table(first["machine"]), end_marker(MACHINE)]
    numbers = {name: number for number, name in enumerate(titles, start=1)}
    for name, payload in results.items():
        parts += ["", f"## {numbers[name]}. {titles[name]}", "", start_marker(name),
                  provenance(payload), "", render[name](payload["results"]), end_marker(name)]
    return "\n".join(parts) + "\n"
