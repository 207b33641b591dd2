"""The ``labkit`` command line: ``labkit execute``, ``labkit cache`` (and the instructor's
``release`` and ``grade``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from labkit import zoo

CELL_TIMEOUT_S = 600


def execute_notebook(path: Path, timeout: int = CELL_TIMEOUT_S) -> float:
    """Execute a notebook in place in its own folder, storing outputs and widget state.

    Returns the wall time in seconds. The file is replaced only after a successful run.
    """
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    elapsed = time.perf_counter() - start
    nbformat.write(notebook, path)
    return elapsed


def _execute(args: argparse.Namespace) -> int:
    for path in args.notebooks:
        elapsed = execute_notebook(Path(path))
        print(f"{path}: executed in {elapsed:.1f} s")
    return 0


def _cache(args: argparse.Namespace) -> int:
    if args.action == "clear":
        for path in zoo.clear_cache():
            print(f"removed {path}")
    elif args.action == "path":
        print(zoo.cache_dir())
    else:
        for name in sorted(zoo.RECIPES):
            zoo.pretrained(name)
            print(f"{name}: {zoo.cache_path(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    execute = commands.add_parser("execute", help="re-execute lab notebooks in place")
    execute.add_argument("notebooks", nargs="+", help="notebook files")
    execute.set_defaults(run=_execute)

    cache = commands.add_parser("cache", help="the pretrained-model cache")
    cache.add_argument("action", choices=("path", "fill", "clear"),
                       help="print its folder, train every model into it, or empty it")
    cache.set_defaults(run=_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
