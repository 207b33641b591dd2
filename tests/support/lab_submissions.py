"""Made-up submissions of lab 00, built from its released notebook, for the grading tests."""

from pathlib import Path

import nbformat

from labkit.grading.release import release_notebook, tags
from tests.support.paths import LABS

LAB_00 = LABS / "00_baseline.ipynb"


def instructor(lab: Path = LAB_00) -> nbformat.NotebookNode:
    return nbformat.read(lab, as_version=4)


def exercises(lab: Path = LAB_00) -> dict[str, str]:
    """The instructor's exercise cells of ``lab`` (the solutions), by cell id."""
    return {cell.id: cell.source for cell in instructor(lab).cells if "exercise" in tags(cell)}


def submission(lab: Path = LAB_00, **sources: str) -> nbformat.NotebookNode:
    """The released ``lab`` with the cells of the given ids holding the given sources."""
    notebook = release_notebook(instructor(lab))
    for cell in notebook.cells:
        cell.source = sources.get(cell.id, cell.source)
    return notebook


def wrong_sparsity(lab: Path = LAB_00) -> dict[str, str]:
    """The solutions, with a ``get_sparsity`` that counts the non-zeros instead."""
    sparsity = next(iter(exercises(lab)))
    return {**exercises(lab), sparsity: "def get_sparsity(tensor):\n"
                                     "    return tensor.count_nonzero().item() / tensor.numel()"}


def lab_solutions(stem: str, namespace: dict) -> dict:
    """The functions lab ``stem``'s instructor notebook defines in its exercise cells,
    run in ``namespace`` (the names its other cells would have given them)."""
    notebook = instructor(LABS / f"{stem}.ipynb")
    for cell in notebook.cells:
        if "exercise" in tags(cell):
            exec(compile(cell.source, f"{stem}:{cell.id}", "exec"), namespace)
    return namespace
