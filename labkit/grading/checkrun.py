"""The check process: the student's outcomes recorded where the reference does not exist.

The notebook's kernel runs the student's code together with every demonstration, so
whatever the checks record there could have been arranged by the student's own code.
The outcomes the referee judges therefore come from a second, fresh process, in the same
isolation, after every process of the notebook has ended. It runs, in notebook order,

- the instructor's *setup* cells that the exercises and checks need: the cells that
  define a name they use, found by following names backwards (:func:`needed_cells`);
- the student's exercise cells, through IPython so that magics behave as in the
  notebook;
- the instructor's check cells, which in grading mode write the student's outcomes on
  the public and the hidden cases and decide nothing.

In that process labkit is a build made for the lab (:func:`stub_labkit`): every function
an exercise of the lab replaces, under whatever name it is reached (a re-export, a
check's ``reference``), raises a ``RuntimeError`` saying so instead of computing. In the
``bwrap`` mode the build is mounted over labkit's own folder, so the real source is
absent too; in the other modes it comes first on the import path.
"""

from __future__ import annotations

import ast
import json
import shutil
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nbformat is the grader's: the check process itself never imports it
    from nbformat import NotebookNode

SPEC = "checkrun.json"


class CellTimeout(Exception):  # noqa: N818 (the alarm's, shown as the cell's error)
    """A cell of the check process ran past its time limit."""


def needed_cells(notebook: NotebookNode) -> list[tuple[str, str]]:
    """The (kind, source) of the cells the check process runs, in notebook order: every
    exercise and check cell, and each other code cell that defines a name one of them
    (or an earlier needed cell) uses."""
    from labkit.grading.inspection import cell_names
    from labkit.grading.release import tags

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    kinds = ["exercise" if "exercise" in tags(cell) else
             "check" if "check" in tags(cell) else "setup" for cell in code]
    needed: set[str] = set()
    keep = [kind != "setup" for kind in kinds]
    for index in range(len(code) - 1, -1, -1):
        defined, used = cell_names(code[index].source)
        if not keep[index] and defined & needed:
            keep[index] = True
        if keep[index]:
            needed |= used
    return [(kind, cell.source if kind != "setup" else used_imports(cell.source, needed))
            for kind, cell, kept in zip(kinds, code, keep, strict=True) if kept]


def used_imports(source: str, used: set[str]) -> str:
    """``source`` with its top-level imports cut to the names in ``used`` (an import
    whose names are all unused goes): importing a module the checks never read, such
    as the lab's figures, only costs time. ``from m import *`` stays; a cell that is not
    Python even through IPython's transformer is returned as it is."""
    from labkit.grading.inspection import python_source

    try:
        tree = ast.parse(python_source(source))
    except (SyntaxError, ValueError):
        return source
    body, cut = [], False
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            names = [alias for alias in statement.names if alias.name == "*"
                     or (alias.asname or alias.name.split(".")[0]) in used]
            cut |= len(names) < len(statement.names)
            statement.names = names
            if not names:
                continue
        body.append(statement)
    if not cut:
        return source
    tree.body = body
    return ast.unparse(tree)


def _stub_body(qualified: str, indent: str) -> list[str]:
    message = (f"{qualified} is not available while grading: it is what the exercise asks "
               "you to write")
    return [f"{indent}raise RuntimeError({message!r})\n"]


def _stub_module(path: Path, names: set[str], module: str) -> None:
    """Replace the bodies of the top-level functions ``names`` in the file ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    tree = ast.parse("".join(lines))
    functions = [node for node in tree.body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and node.name in names]
    missing = names - {function.name for function in functions}
    if missing:
        raise ValueError(f"{module}: no top-level function {', '.join(sorted(missing))} "
                         "to stub")
    for function in sorted(functions, key=lambda node: node.lineno, reverse=True):
        first = function.body[0]
        indent = lines[first.lineno - 1][:first.col_offset]
        lines[first.lineno - 1:function.end_lineno] = _stub_body(
            f"{module}.{function.name}", indent)
    path.write_text("".join(lines), encoding="utf-8")


def stub_labkit(dest: Path, replaced: Iterable[str]) -> Path:
    """A copy of the labkit package in ``dest/labkit`` where each function named in
    ``replaced`` (qualified, ``labkit.measure.get_sparsity``) raises a ``RuntimeError``
    saying so; returns the copy's folder."""
    import labkit

    source = Path(labkit.__file__).resolve().parent
    package = Path(dest) / "labkit"
    shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    by_module: dict[str, set[str]] = {}
    for name in replaced:
        module, _, function = name.rpartition(".")
        by_module.setdefault(module, set()).add(function)
    for module, names in sorted(by_module.items()):
        parts = module.split(".")[1:]
        path = package.joinpath(*parts).with_suffix(".py")
        if not path.is_file():
            path = package.joinpath(*parts, "__init__.py")
        _stub_module(path, names, module)
    return package


def write_spec(folder: Path, notebook: NotebookNode, cell_timeout_s: float) -> Path:
    """The cells the check process runs and its limits, as ``folder/checkrun.json``."""
    path = Path(folder) / SPEC
    path.write_text(json.dumps({"cells": needed_cells(notebook),
                                "cell_timeout_s": cell_timeout_s}), encoding="utf-8")
    return path


def _alarm(signum, frame):
    raise CellTimeout


def run_cells(cells: list[tuple[str, str]], cell_timeout_s: float) -> None:
    """Run the cells in a fresh IPython shell, each within ``cell_timeout_s``; a cell
    that fails is reported and the next one runs (a check whose exercise failed then
    records that failure)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    signal.signal(signal.SIGALRM, _alarm)
    for number, (kind, source) in enumerate(cells):
        signal.setitimer(signal.ITIMER_REAL, cell_timeout_s)
        try:
            result = shell.run_cell(source, store_history=False, silent=kind == "setup")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not result.success:
            print(f"cell {number} ({kind}) failed", flush=True)


def main(spec: Path) -> None:
    """Read the spec the grader wrote and run its cells."""
    settings = json.loads(Path(spec).read_text(encoding="utf-8"))
    run_cells([tuple(cell) for cell in settings["cells"]], float(settings["cell_timeout_s"]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
