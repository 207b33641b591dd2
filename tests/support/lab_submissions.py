"""Made-up submissions of lab 00, built from its released notebook, for the grading tests;
and the labs' own solutions, run from their instructor notebooks, for the check tests."""

import copy
import functools
from pathlib import Path

import nbformat
import torch
import torch.nn.functional as F
from torch import nn

from labkit.grading.release import release_notebook, tags
from labkit.hardware import eie
from labkit.hardware.sparseconv import kernel_offsets
from labkit.models import VGG, BasicBlock, ResNet
from labkit.pruning import channels, llm
from labkit.pruning.granularity import fine_grained_mask
from labkit.pruning.masking import Pruner
from labkit.training import evaluate, finetune
from tests.support.paths import LABS

LAB_00 = LABS / "00_baseline.ipynb"

# The names the labs' exercise cells use, which the labs' other cells import.
LAB_NAMES = {"torch": torch, "nn": nn, "F": F, "copy": copy, "VGG": VGG, "ResNet": ResNet,
             "BasicBlock": BasicBlock, "channels": channels, "eie": eie,
             "kernel_offsets": kernel_offsets, "llm": llm,
             "fine_grained_mask": fine_grained_mask, "evaluate": evaluate,
             "finetune": finetune, "Pruner": Pruner}


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


@functools.cache
def lab_solutions(stem: str) -> dict:
    """The functions lab ``stem``'s instructor notebook defines in its exercise cells, run
    with :data:`LAB_NAMES` (the names its other cells would have given them)."""
    namespace = dict(LAB_NAMES)
    notebook = instructor(LABS / f"{stem}.ipynb")
    for cell in notebook.cells:
        if "exercise" in tags(cell):
            exec(compile(cell.source, f"{stem}:{cell.id}", "exec"), namespace)
    return namespace
