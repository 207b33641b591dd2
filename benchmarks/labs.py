"""Comparison 6: how long each lab notebook takes to run, against the one-minute goal.

Each lab is copied into a fresh temporary folder and executed there by
:func:`labkit.cli.execute_notebook` (nbclient, a new kernel per run), so the committed
notebook is never touched. The pretrained models are trained into the cache first, as
``labkit grade`` does, so that no run pays for the one-time training. The median of
``labs_runs`` runs is reported, with the fastest and the slowest. A lab that fails (a
cell raises, times out or kills its kernel) is reported as failed, with the error, and
the others still run.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from pathlib import Path

from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat.reader import NotJSONError

from labkit import zoo
from labkit.cli import execute_notebook

from . import report
from .config import ROOT, Config

NAME = "labs"
TITLE = "Execution time of every lab"
PROMISE_S = 60
LAB_FAILURES = (CellExecutionError, CellTimeoutError, DeadKernelError, NotJSONError)


def execute_copy(notebook: Path) -> float:
    """Seconds to execute a copy of ``notebook`` in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as folder:
        copy = Path(folder) / notebook.name
        shutil.copyfile(notebook, copy)
        return execute_notebook(copy)


def run(config: Config) -> dict:
    if config.pretrained:
        for name in sorted(zoo.RECIPES):
            zoo.pretrained(name, progress=False)
    return {"promise_s": PROMISE_S, "rows": [time_lab(notebook, config.labs_runs)
                                             for notebook in config.labs]}


def time_lab(notebook: Path, runs: int) -> dict:
    """``runs`` executions of a copy of ``notebook``; the error instead if one fails."""
    path = notebook.resolve()
    row = {"lab": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name}
    try:
        seconds = [execute_copy(notebook) for _ in range(runs)]
    except LAB_FAILURES as error:
        print(f"    {row['lab']}: failed", flush=True)
        return {**row, "error": f"{type(error).__name__}: {str(error).strip()[-300:]}"}
    median = statistics.median(seconds)
    print(f"    {row['lab']}: {median:.0f} s", flush=True)
    return {**row, "runs": seconds, "median_s": median}


def markdown(results: dict) -> str:
    promise = results["promise_s"]
    table = report.table(
        ("lab", "runs", "median", "fastest", "slowest", f"within {promise} s"),
        [_row(r, promise) for r in results["rows"]])
    total = sum(r.get("median_s", 0) for r in results["rows"])
    return (f"**Wall time** of a fresh kernel running each lab from top to bottom "
            f"(all labs: {total:.0f} s).\n\n" + table + "\n")


def _row(result: dict, promise: float) -> tuple:
    if "error" in result:
        error = result["error"].splitlines()[0].replace("|", "\\|")
        return (f"`{result['lab']}`", "failed", error, "", "", "**no**")
    runs = result["runs"]
    return (f"`{result['lab']}`", len(runs), f"{result['median_s']:.1f} s",
            f"{min(runs):.1f} s", f"{max(runs):.1f} s",
            "yes" if result["median_s"] <= promise else "**no**")
