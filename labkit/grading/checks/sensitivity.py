"""Checks of lab 04: a per-layer sparsity choice within a size budget."""

from __future__ import annotations

import numbers

from labkit import measure, zoo
from labkit.grading.checks.core import Case, Check, describe_outcome, outcome_kind
from labkit.pruning import sensitivity

SIZE_BUDGET = 0.25


def _answer(function, case: Case):
    return function()


def judge_sparsity_budget(_: object, sparsities: object) -> str | None:
    """``None`` when ``sparsities`` names every prunable layer of the lab's model with a
    number in [0, 1) and keeps its non-zero size within :data:`SIZE_BUDGET` of dense."""
    if outcome_kind(sparsities) != "value":
        return f"expected a dict of sparsities, got {describe_outcome(sparsities)}"
    model = zoo.pretrained("vgg-digits", progress=False)
    layers = sorted(measure.prunable_layers(model))
    if type(sparsities) is not dict or sorted(sparsities) != layers:
        return (f"expected a dict with one sparsity for every prunable layer, named as in "
                f"prunable_layers(model): {layers}; got {describe_outcome(sparsities)}")
    for name, value in sparsities.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            return f"the sparsity of {name} must be a number in [0, 1), got {value!r}"
    fraction = sensitivity.size_fraction(model, sparsities)
    if fraction > SIZE_BUDGET:
        return (f"the pruned model keeps {fraction:.4f} of the dense size, "
                f"{fraction - SIZE_BUDGET:.4f} above the budget of {SIZE_BUDGET}")
    return None


SPARSITY_BUDGET = Check(
    name="sparsity_budget",
    reference=lambda: None,
    cases=lambda: [Case("your sparsities", expected=None)],
    hidden=lambda seed: [],
    observe=_answer,
    compare=judge_sparsity_budget,
    pure=False,
)
