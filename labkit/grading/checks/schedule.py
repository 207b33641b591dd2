"""Checks of lab 06: the AGP schedule and iterative pruning."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from labkit import data, measure
from labkit.grading.checks.core import Case, Check, close, exact
from labkit.models import MLP
from labkit.pruning import schedule
from labkit.training import evaluate

SPARSITY_TOLERANCE = 1e-5
"""Sparsities agree within this (relative and absolute): the cubic in float32 is off by a
few 1e-7; a step of the schedule moves the sparsity by far more."""


def _agp_cases() -> list[Case]:
    arguments = [
        ("t = 0 starts at s_initial", (0, 10, 0.0, 0.9)),
        ("t = n ends at s_final", (10, 10, 0.0, 0.9)),
        ("half way, t = 5 of 10", (5, 10, 0.0, 0.9)),
        ("s_initial above zero, t = 1 of 4", (1, 4, 0.2, 0.8)),
        ("s_initial above zero, t = 3 of 4", (3, 4, 0.2, 0.8)),
        ("a single step, n = 1, t = 1", (1, 1, 0.3, 0.95)),
        ("s_initial = s_final stays put", (2, 3, 0.5, 0.5)),
        ("a long schedule, t = 17 of 100", (17, 100, 0.05, 0.98)),
    ]
    return [Case(label, args) for label, args in arguments]


def _hidden_agp(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(4):
        n = int(torch.randint(1, 50, (1,), generator=generator))
        t = int(torch.randint(0, n + 1, (1,), generator=generator))
        s_initial = round(float(torch.rand(1, generator=generator)) * 0.5, 3)
        s_final = round(s_initial + float(torch.rand(1, generator=generator)) * 0.45, 3)
        cases.append(Case(f"t = {t} of {n}, {s_initial} -> {s_final}",
                          (t, n, s_initial, s_final)))
    return cases


AGP_SPARSITY = Check(
    name="agp_sparsity",
    reference=schedule.agp_sparsity,
    cases=_agp_cases,
    hidden=_hidden_agp,
    compare=close(SPARSITY_TOLERANCE),
    replaces=("labkit.pruning.schedule.agp_sparsity",),
    conventions=("as a number",),
)

SIZES = (64 * 32, 32 * 10)
"""The weights of the check's MLP's two layers."""
ACCURACY_TOLERANCE = 1e-4
"""The last accuracy and the returned model's agree within this (points, relative and
absolute): one image of the 270 is 0.37 points."""


def observe_iterative_prune(iterative_prune, case: Case) -> dict:
    """Run ``iterative_prune`` on a tiny MLP and 192 digits; return what the check
    looks at. Each layer's sparsity is its count of zero weights over its size, unrounded,
    as the expected one is ``round(n * s) / n``: the same division of the same integers
    when the counts agree, so no rounding tie can turn a right answer wrong."""
    (sparsities,) = case.args
    splits = data.load("digits")
    images, labels = splits.train.tensors
    train_loader = DataLoader(TensorDataset(images[:192], labels[:192]), batch_size=64,
                              shuffle=True, generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(splits.val, batch_size=512)
    torch.manual_seed(0)
    model = MLP(64, (32,), 10)
    original = {name: value.clone() for name, value in model.state_dict().items()}
    pruned, accuracies = iterative_prune(model, list(sparsities), train_loader, val_loader, 1)
    weights = [layer.weight.detach() for layer in measure.prunable_layers(pruned).values()]
    before = [layer.weight.detach() for layer in measure.prunable_layers(model).values()]
    return {
        "layer sparsities": [(w.numel() - int(w.count_nonzero())) / w.numel()
                             for w in weights],
        "accuracies returned": len(accuracies),
        "last accuracy is the returned model's": len(accuracies) > 0 and math.isclose(
            float(accuracies[-1]), evaluate(pruned, val_loader), rel_tol=ACCURACY_TOLERANCE,
            abs_tol=ACCURACY_TOLERANCE),
        "a new model": pruned is not model,
        "input unchanged": all(torch.equal(value, original[name])
                               for name, value in model.state_dict().items()),
        "surviving weights finetuned": any(not torch.equal(w[w != 0], b[w != 0])
                                           for w, b in zip(weights, before, strict=True)),
    }


def _expected(sparsities: list[float]) -> dict:
    """Every layer ends with ``round(numel * s)`` zero weights for the last sparsity ``s``
    (the magnitude masks of ``Pruner.from_sparsity``, kept through finetuning)."""
    final = sparsities[-1]
    return {"layer sparsities": [round(n * final) / n for n in SIZES],
            "accuracies returned": len(sparsities),
            "last accuracy is the returned model's": True, "a new model": True,
            "input unchanged": True, "surviving weights finetuned": True}


def _iterative_cases() -> list[Case]:
    return [Case(f"steps {steps}", (steps,), expected=_expected(steps))
            for steps in ([0.5], [0.3, 0.6, 0.9])]


def _hidden_iterative(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    steps = sorted({round(0.1 + 0.8 * float(x), 2) for x in torch.rand(2, generator=generator)})
    return [Case(f"steps {steps}", (steps,), expected=_expected(steps))]


ITERATIVE_PRUNE = Check(
    name="iterative_prune",
    reference=schedule.iterative,
    cases=_iterative_cases,
    hidden=_hidden_iterative,
    observe=observe_iterative_prune,
    compare=exact,
    pure=False,
    replaces=("labkit.pruning.schedule.iterative", "labkit.pruning.schedule.one_shot"),
    conventions=("new model", "leave `model` unchanged", "one per step",
                 "round(numel * s)"),
)
