"""Release: turn an instructor notebook into the notebook students receive.

An instructor notebook holds the solutions. In a code cell tagged ``exercise`` each
solution sits between a line ``### BEGIN SOLUTION`` and a line ``### END SOLUTION``;
a markdown cell tagged ``question`` holds only the model answer. Releasing replaces

- every solution block by ``# YOUR CODE HERE`` and ``raise NotImplementedError()``,
  indented like the ``### BEGIN SOLUTION`` line, so a function body stays a body;
- every question cell's text by :data:`ANSWER_PLACEHOLDER`;

and clears, so that a student sees nothing before running it that came from the
instructor's run:

- the outputs and execution counts of exercise and check cells (a check's stored
  output is the expected line nbval compares against; the student should run it);
- every output computed from a solution: of each code cell that uses a value derived
  from the student's code, traced by scope down the notebook from the names an exercise
  binds at its top level (:func:`student_names`), read from the cells' syntax; a
  function's locals and loop variables are not the student's, so figures and tables
  that draw from labkit alone stay;
- widget views, their stored state, and progress bars (text that only a live kernel
  makes sense of).

Everything else (cell ids, tags, metadata, figures and text that do not depend on a
solution) is kept as it is: the grader matches a student's cells to the instructor's
by cell id.

The first code cell of every lab, tagged ``install``, installs the course's own version
of labkit where it is missing (Colab, a plain Jupyter): the wheel that the book build
publishes with the site, under :data:`COURSE_FOLDER`, within the course's pinned
versions. Its text is derived from the course site that ``_config.yml`` sets once
(``html.baseurl``, :func:`course_site`); :func:`write_install_cells` keeps the labs in
step with it, and a release writes it too.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import nbformat
import yaml
from nbformat import NotebookNode

from labkit import __version__
from labkit.files import write_atomically
from labkit.grading.inspection import cell_names, python_source

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
CODE_PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_PLACEHOLDER = "_Write your answer here._"


DISTRIBUTION = "pruning-workbook"
"""The course's name on a package index; the import package is ``labkit``."""
COURSE_FOLDER = "course"
"""The folder of the published site that holds the course wheel and ``constraints.txt``."""
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def course_site(config: Path) -> str:
    """The course's public URL, ``html.baseurl`` of the book's ``_config.yml`` at
    ``config``, ending in ``/``."""
    settings = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    site = str((settings.get("html") or {}).get("baseurl") or "")
    if not re.fullmatch(r"https?://[^\s\"']+", site):
        raise ValueError(f"html.baseurl in {str(config)!r} must be the course's http(s) URL, "
                         f"got {site!r}")
    return site.rstrip("/") + "/"


def wheel_name(version: str = __version__) -> str:
    """The file name of the course wheel of ``version``."""
    return f"{DISTRIBUTION.replace('-', '_')}-{version}-py3-none-any.whl"


def install_source(site: str, version: str = __version__) -> str:
    """The text of a lab's install cell for the course at ``site``, version ``version``:
    the course wheel from the site, within the course's pinned versions, a torch that is
    already installed kept (Colab), else torch's CPU build; a failed install stops the
    cell with one message."""
    course = f"{site.rstrip('/')}/{COURSE_FOLDER}/"
    return f"""\
# Where labkit is missing (Colab, a plain Jupyter), install the course's own version
# from the course site, within its pinned versions: a torch already installed stays,
# else the CPU build comes. If the install fails, this cell stops and says why.
import importlib.util

if importlib.util.find_spec("labkit") is None:
    import importlib.metadata
    import subprocess
    import sys
    import tempfile
    import urllib.request

    COURSE = "{course}"
    try:
        pins = urllib.request.urlopen(COURSE + "constraints.txt", timeout=60).read()
    except OSError as error:
        raise RuntimeError(f"cannot reach the course at {{COURSE}}: {{error}}") from None
    pins = pins.decode().splitlines()
    if importlib.util.find_spec("torch") is not None:
        torch_pin = f"torch=={{importlib.metadata.version('torch')}}"
        pins = [pin for pin in pins if pin.split("==")[0] != "torch"] + [torch_pin]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\\n".join(pins))
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "-c", constraints.name,
         "--extra-index-url", "{CPU_TORCH_INDEX}",
         f"{DISTRIBUTION} @ {{COURSE}}{wheel_name(version)}"],
        capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"the course did not install: {{pip.stderr[-1500:]}}")
    importlib.invalidate_caches()
"""


def install_cell(notebook: NotebookNode) -> NotebookNode | None:
    """The notebook's install cell: its first code cell, where tagged ``install``."""
    first = next((cell for cell in notebook.cells if cell.cell_type == "code"), None)
    return first if first is not None and "install" in tags(first) else None


def write_install_cells(labs: Path, config: Path) -> list[Path]:
    """Give the install cell of every ``labs/*.ipynb`` the text derived from the course
    site in ``config`` (:func:`install_source`); returns the notebooks it changed. Run by
    the book build, so a course that sets its own URL gets labs that install from it."""
    source = install_source(course_site(config))
    changed = []
    for path in sorted(Path(labs).glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        cell = install_cell(notebook)
        if cell is not None and cell.source != source:
            cell.source = source
            write_atomically(path, nbformat.writes(notebook) + "\n")
            changed.append(path)
    return changed


class ReleaseError(ValueError):
    """An instructor notebook cannot be released: it names the notebook and the cell."""


def tags(cell: NotebookNode) -> set[str]:
    """The cell's metadata tags, as a set."""
    return set(cell.get("metadata", {}).get("tags", []))


def strip_solutions(source: str, where: str = "cell") -> str:
    """``source`` with each solution block replaced by the code placeholder.

    ``where`` names the cell in error messages. Raises :class:`ReleaseError` when the
    source has no solution block or when the markers do not pair up.
    """
    released: list[str] = []
    indent: str | None = None
    blocks = 0
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker == BEGIN_SOLUTION:
            if indent is not None:
                raise ReleaseError(f"{where}: line {number} opens a solution inside another")
            indent = line[: len(line) - len(line.lstrip())]
            released.extend(indent + placeholder for placeholder in CODE_PLACEHOLDER)
        elif marker == END_SOLUTION:
            if indent is None:
                raise ReleaseError(f"{where}: line {number} closes a solution never opened")
            indent = None
            blocks += 1
        elif indent is None:
            released.append(line)
    if indent is not None:
        raise ReleaseError(f"{where}: a solution is opened but never closed")
    if blocks == 0:
        raise ReleaseError(f"{where}: an exercise cell needs a {BEGIN_SOLUTION!r} block")
    return "\n".join(released) + ("\n" if source.endswith("\n") else "")


def _has_marker(source: str) -> bool:
    return any(line.strip() in (BEGIN_SOLUTION, END_SOLUTION) for line in source.splitlines())


def release_notebook(notebook: NotebookNode, name: str = "notebook",
                     install: str | None = None) -> NotebookNode:
    """The student version of ``notebook`` (a new notebook; the input is not changed).

    ``name`` names the notebook in error messages. A solution marker outside an
    exercise cell is an error too: it would ship a solution to the students. ``install``,
    where given, becomes the text of the install cell (:func:`install_source`).
    """
    released = copy.deepcopy(notebook)
    cell = install_cell(released)
    if install is not None and cell is not None:
        cell.source = install
    _clear_solution_outputs(released)
    for index, cell in enumerate(released.cells):
        where = f"{name}, cell {index} (id {cell.get('id', '?')})"
        cell_tags = tags(cell)
        if "exercise" in cell_tags:
            if cell.cell_type != "code":
                raise ReleaseError(f"{where}: an exercise cell must be a code cell")
            cell.source = strip_solutions(cell.source, where)
        elif _has_marker(cell.source):
            raise ReleaseError(f"{where}: solution markers in a cell not tagged 'exercise'")
        if "question" in cell_tags:
            if cell.cell_type != "markdown":
                raise ReleaseError(f"{where}: a question cell must be a markdown cell")
            cell.source = ANSWER_PLACEHOLDER
        if cell.cell_type == "code" and cell_tags & {"exercise", "check"}:
            cell.outputs = []
            cell.execution_count = None
    for cell in released.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not live_only(output)]
    released.metadata.pop("widgets", None)
    return released


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS = re.compile(r"\d+%\|.*\|\s*\d+/\d+|^\s*(interactive|HBox|VBox)\(children=")


def live_only(output: NotebookNode) -> bool:
    """An output that means something only in a live kernel: a widget view, or a
    progress bar (as a widget's text or as ``tqdm``'s text)."""
    data = output.get("data", {})
    if WIDGET_VIEW in data and not any(kind.startswith("image/") for kind in data):
        return True
    text = output.get("text", "") or data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return bool(PROGRESS.search(text))


def _statements(source: str) -> list[tuple[ast.stmt, range]]:
    """The top-level statements of a cell as IPython runs it, each with its line span
    (none when the cell does not parse)."""
    try:
        tree = ast.parse(python_source(source))
    except (SyntaxError, ValueError):
        return []
    return [(node, range(node.lineno, (node.end_lineno or node.lineno) + 1))
            for node in tree.body]


def _steps(statement: ast.stmt) -> list[str]:
    """``statement`` as the steps that bind names, in the order they run: a ``for``,
    ``with``, ``if``, ``while`` or ``try`` becomes its header (``target = iterable``,
    ``name = context``, the test) followed by the steps of its bodies; anything else,
    a function or class definition included, is one step."""
    if isinstance(statement, (ast.For, ast.AsyncFor)):
        header = [ast.Assign(targets=[statement.target], value=statement.iter)]
    elif isinstance(statement, (ast.With, ast.AsyncWith)):
        header = [ast.Assign(targets=[item.optional_vars], value=item.context_expr)
                  if item.optional_vars else ast.Expr(item.context_expr)
                  for item in statement.items]
    elif isinstance(statement, (ast.If, ast.While)):
        header = [ast.Expr(statement.test)]
    elif isinstance(statement, ast.Try):
        header = []
    else:
        return [ast.unparse(statement)]
    bodies = [getattr(statement, field, []) for field in ("body", "orelse", "finalbody")]
    bodies += [handler.body for handler in getattr(statement, "handlers", [])]
    steps = [ast.unparse(ast.fix_missing_locations(node)) for node in header]
    return steps + [step for body in bodies for node in body for step in _steps(node)]


def _solution_lines(source: str) -> set[int]:
    """The line numbers of the cell's solution blocks, markers included."""
    lines: set[int] = set()
    begin = None
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip() == BEGIN_SOLUTION:
            begin = number
        elif line.strip() == END_SOLUTION and begin is not None:
            lines.update(range(begin, number + 1))
            begin = None
    return lines


def _loop_variables(statement: ast.stmt) -> set[str]:
    """The names a top-level ``for`` statement binds as its loop variable."""
    if not isinstance(statement, (ast.For, ast.AsyncFor)):
        return set()
    return {name.id for name in ast.walk(statement.target) if isinstance(name, ast.Name)}


def student_names(source: str) -> set[str]:
    """The names an exercise cell gives the student's values: those bound at the top
    level by a statement that holds a solution block (a function the student completes,
    or the student's own top-level code), less the loop variables of a ``for``. Names
    bound inside a function, and the cell's given constants, are not the student's."""
    solution = _solution_lines(source)
    names: set[str] = set()
    for statement, span in _statements(source):
        if solution.intersection(span):
            names |= cell_names(ast.unparse(statement))[0] - _loop_variables(statement)
    return names


def _clear_solution_outputs(notebook: NotebookNode) -> None:
    """Clear the outputs of every code cell that uses a value derived from the
    student's code, traced step by step down the notebook (:func:`_steps`): a step that
    reads a derived name makes the names it binds derived too, and one that rebinds a
    name from other values makes it the instructor's again."""
    derived: set[str] = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if "exercise" in tags(cell):
            derived |= student_names(cell.source)
            continue
        uses = False
        steps = [step for statement, _ in _statements(cell.source) for step in _steps(statement)]
        for step in steps:
            defined, used = cell_names(step)
            if used & derived:
                uses = True
                derived |= defined
            else:
                derived -= defined
        if uses:
            cell.outputs = []
            cell.execution_count = None


def release_folder(labs: Path, out: Path, force: bool = False) -> list[Path]:
    """Release every ``labs/*.ipynb`` into ``out``; returns the paths written.

    Every notebook is released in memory before anything is written, so an error in
    one notebook leaves ``out`` untouched. Where the folder above ``labs`` holds the
    book's ``_config.yml``, the install cells install from the course site it sets.
    Refuses a non-empty ``out`` unless ``force`` (then it overwrites the notebooks of
    the same name and leaves other files alone), and refuses to write into ``labs`` itself.
    """
    labs, out = Path(labs), Path(out)
    if not labs.is_dir():
        raise ValueError(f"labs must be a folder of instructor notebooks, got {str(labs)!r}")
    sources = sorted(labs.glob("*.ipynb"))
    if not sources:
        raise ValueError(f"labs must hold at least one .ipynb notebook, {str(labs)!r} has none")
    if out.resolve() == labs.resolve():
        raise ValueError(f"out must differ from labs, got {str(out)!r} for both")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, {str(out)!r} is a file")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"out folder {str(out)!r} is not empty; pass force=True (--force)")
    config = labs.parent / "_config.yml"
    install = install_source(course_site(config)) if config.is_file() else None
    released = {
        out / source.name: release_notebook(nbformat.read(source, as_version=4), source.name,
                                            install)
        for source in sources
    }
    for path, notebook in released.items():
        write_atomically(path, nbformat.writes(notebook) + "\n")
    return list(released)
