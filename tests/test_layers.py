"""labkit's imports flow one way: a module imports from its own layer or a lower one,
and no chain of imports leads back to where it started.

The layers, lowest first (``labkit/__init__.py`` lists them too)::

    validation
    data  models  measure  training  files
    zoo
    pruning
    search  hardware
    viz
    grading
    cli

Imports are read from the source with :mod:`ast`. Every import counts for the layers,
those inside functions included, so a lazy import cannot hide an upward dependency; for
cycles, the imports that run when a module is imported (outside functions) count, since
those are the ones whose order can break.
"""

import ast
from pathlib import Path

import pytest

import labkit

LAYERS = (
    ("validation",),
    ("data", "models", "measure", "training", "files"),
    ("zoo",),
    ("pruning",),
    ("search", "hardware"),
    ("viz",),
    ("grading",),
    ("cli", "__main__"),
)
PACKAGE = Path(labkit.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of a labkit module; the package ``labkit`` itself is below them all."""
    if module == "labkit":
        return -1
    component = module.split(".")[1]
    for level, names in enumerate(LAYERS):
        if component in names:
            return level
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and the docstrings")


def imports(module: str, *, in_functions: bool = True) -> set[str]:
    """The labkit modules that ``module`` imports, anywhere in its source or
    (``in_functions=False``) outside function bodies."""
    found = set()
    for node in _nodes(ast.parse(MODULES[module].read_text()), in_functions):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if f"{node.module}.{alias.name}" in MODULES}
    return {name for name in found if name in MODULES and name != module}


def _nodes(tree: ast.AST, in_functions: bool):
    """The nodes of ``tree``, without those inside functions unless ``in_functions``."""
    for child in ast.iter_child_nodes(tree):
        if in_functions or not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield child
            yield from _nodes(child, in_functions)


GRAPH = {module: imports(module) for module in MODULES}
ON_IMPORT = {module: imports(module, in_functions=False) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_from_its_layer_or_below(module):
    upward = sorted(name for name in GRAPH[module] if layer(name) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from higher layers: {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as a list of nodes (first repeated at the end), or []."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == "open":
                return [*path[path.index(successor):], successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_chain_of_imports_returns_to_its_start():
    cycle = find_cycle(ON_IMPORT)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_imports_inside_functions_count_for_layers_but_not_for_cycles():
    assert "labkit.grading.container" in GRAPH["labkit.grading.isolation"]
    assert "labkit.grading.container" not in ON_IMPORT["labkit.grading.isolation"]
    assert "labkit.validation" in ON_IMPORT["labkit.measure"]


def test_the_checks_catch_an_upward_import_and_a_cycle():
    assert layer("labkit.viz") > layer("labkit.search.netadapt") > layer("labkit.zoo")
    assert layer("labkit.training") < layer("labkit.search")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_every_layer_is_named_in_the_package_docstring():
    for names in LAYERS:
        for name in names:
            if name != "__main__":
                assert f"``{name}``" in labkit.__doc__, name


def test_viz_trains_evaluates_and_times_nothing():
    views = [module for module in MODULES if module.startswith("labkit.viz")]
    assert len(views) >= 3
    for module in views:
        assert not GRAPH[module] & {"labkit.training", "labkit.zoo", "labkit.search"}, module
        source = MODULES[module].read_text()
        for name in ("evaluate(", "finetune(", "fastest_run_ms(", "time_call(", "train("):
            assert name not in source, f"{module} calls {name}"
