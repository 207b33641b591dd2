"""What an exercise cell's code reaches for, read from its syntax tree (never run).

Two findings per cell:

- **reference use**: the cell names a labkit function that an exercise of this lab asks
  the student to write (an attribute ``granularity.fine_grained_mask``, an import
  ``from ... import fine_grained_mask``, or the name as a string for ``getattr``); the
  checks that replace it earn nothing;
- **tampering**, for a person to review: stack frames, the garbage collector, IPython's
  hooks and events, ``builtins``, the import system, ``labkit.grading``, ``/proc``,
  processes and the environment. An honest solution to these exercises needs none.
"""

from __future__ import annotations

import ast
import symtable
from collections.abc import Iterable
from dataclasses import dataclass, field

TAMPERING_NAMES = frozenset({
    "_getframe", "f_back", "f_locals", "f_globals", "f_code", "f_builtins", "tb_frame",
    "tb_next", "gc", "inspect", "get_ipython", "set_custom_exc", "input_transformers_cleanup",
    "input_transformers_post", "ast_transformers", "events", "showtraceback", "builtins",
    "__builtins__", "importlib", "__import__", "ctypes", "__wrapped__", "__closure__",
    "__code__", "__globals__", "__subclasses__", "subprocess", "setsid", "fork", "forkpty",
    "atexit", "signal", "grading", "checks", "kernel", "exec", "eval", "compile",
    "breakpoint", "sys",
})
"""Names and attributes that mark a cell for review. ``compile`` and ``eval`` count
only as bare names (``torch.compile`` and ``model.eval()`` are fine)."""

BARE_ONLY = frozenset({"exec", "eval", "compile", "breakpoint"})
SYSTEM_ATTRIBUTES = {"os": {"system", "environ", "fork", "setsid", "kill", "popen",
                            "execv", "execve", "spawnv", "putenv", "getenv"},
                     "sys": {"modules", "settrace", "setprofile", "_getframe", "stdout",
                             "stderr", "exit"}}
TAMPERING_TEXT = ("/proc", "labkit.grading", "/grading")


@dataclass
class Findings:
    """What one exercise cell names: reference functions, and things to review."""

    reference: set[str] = field(default_factory=set)
    review: set[str] = field(default_factory=set)


def inspect_source(source: str, replaced: Iterable[str]) -> Findings:
    """The findings in ``source``; ``replaced`` holds the short names of the reference
    functions the lab's exercises replace. The source is read as IPython runs it
    (:func:`python_source`); a cell that still does not parse is flagged for review."""
    replaced = set(replaced)
    found = Findings()
    try:
        tree = ast.parse(python_source(source))
    except (SyntaxError, ValueError):
        found.review.add("a cell that does not parse as Python")
        return found
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _attribute(node, replaced, found)
        elif isinstance(node, ast.Name) and node.id in TAMPERING_NAMES:
            found.review.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            _import(node, replaced, found)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if text in replaced:
                found.reference.add(text)
            found.review.update(marker for marker in TAMPERING_TEXT if marker in node.value)
    if "get_ipython" not in source:  # what the magics became, not the student's own call
        found.review.discard("get_ipython")
    return found


def python_source(source: str) -> str:
    """``source`` as IPython runs it: magics and shell escapes (``%time``, ``!ls``)
    become the Python calls they stand for, so a first line ``%time _ = 1`` cannot hide
    the rest of the cell from the inspection."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def cell_names(source: str) -> tuple[set[str], set[str]]:
    """The names a cell binds at its top level, and the global names it reads (at the
    top level or inside its functions; a function's parameters and locals are not),
    read as IPython runs it (:func:`symtable.symtable`). Both are empty when the cell
    does not parse."""
    try:
        table = symtable.symtable(python_source(source), "<cell>", "exec")
    except (SyntaxError, ValueError):
        return set(), set()
    defined = {symbol.get_name() for symbol in table.get_symbols()
               if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace()}
    used: set[str] = set()
    scopes = [table]
    while scopes:
        scope = scopes.pop()
        scopes += scope.get_children()
        used |= {symbol.get_name() for symbol in scope.get_symbols() if symbol.is_referenced()
                 and (scope is table or symbol.is_global() or symbol.is_free())}
    return defined, used


def _attribute(node: ast.Attribute, replaced: set[str], found: Findings) -> None:
    if node.attr in replaced:
        found.reference.add(node.attr)
    if node.attr in TAMPERING_NAMES - BARE_ONLY - {"sys", "checks", "kernel", "grading"}:
        found.review.add(node.attr)
    if node.attr in {"grading", "checks"} and _root_name(node) == "labkit":
        found.review.add(f"labkit.{node.attr}")
    if isinstance(node.value, ast.Name) and node.attr in SYSTEM_ATTRIBUTES.get(node.value.id, ()):
        found.review.add(f"{node.value.id}.{node.attr}")


def _import(node: ast.Import | ast.ImportFrom, replaced: set[str], found: Findings) -> None:
    modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
        else [node.module or ""]
    for module in modules:
        top = module.split(".")[0]
        if top in TAMPERING_NAMES or top in ("os", "sys") or module.startswith("labkit.grading"):
            found.review.add(f"import {module}")
    if isinstance(node, ast.ImportFrom):
        for alias in node.names:
            if alias.name in replaced:
                found.reference.add(alias.name)
            elif alias.name in TAMPERING_NAMES or alias.name == "*":
                found.review.add(f"from {node.module} import {alias.name}")


def _root_name(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""
