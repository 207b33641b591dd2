"""Checks of lab 05: AMC's budget rule, and a pruning policy within a MAC budget that
must reach an accuracy bar."""

from __future__ import annotations

import numbers

import torch

from labkit import data, measure, zoo
from labkit.grading.checks.core import Case, Check, close, describe_outcome
from labkit.pruning.channels import apply_channel_sorting, channel_groups, channel_prune
from labkit.search import amc, torch_threads
from labkit.training import TRAIN_THREADS, evaluate

RATIO_TOLERANCE = 1e-5
"""Ratios agree within this (relative and absolute). ``1 - (B - fixed) / reducible`` in
float32 loses up to a few 1e-7 to cancellation; one channel of a 64-wide conv is 0.016."""


def _case(label: str, ratio: float, reducible: float, fixed: float, budget: float,
          max_ratio: float) -> Case:
    return Case(label, (ratio,), {"reducible_macs": reducible, "fixed_macs": fixed,
                                  "budget_macs": budget, "max_ratio": max_ratio})


def _limit_cases() -> list[Case]:
    settings = [
        ("within the budget: unchanged", 0.3, 80, 40, 100, 0.8),
        ("prunes too little: raised to r_min", 0.0, 80, 40, 100, 0.8),
        ("exactly r_min", 0.25, 80, 40, 100, 0.8),
        ("prunes too much: capped at max_ratio", 0.95, 80, 40, 100, 0.8),
        ("negative action: raised to r_min", -0.3, 80, 40, 100, 0.8),
        ("loose budget, negative action: never below 0", -0.3, 50, 10, 100, 0.8),
        ("budget out of reach: still capped at max_ratio", 0.1, 100, 90, 95, 0.5),
        ("MAC counts of a VGG layer", 0.1, 884_736, 163_840, 746_816, 0.8),
    ]
    return [_case(*setting) for setting in settings]


def _hidden_limit(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(5):
        reducible, fixed = (int(x) for x in torch.randint(1_000, 1_000_000, (2,),
                                                          generator=generator))
        budget = int(fixed + float(torch.rand(1, generator=generator)) * reducible)
        ratio = round(float(torch.rand(1, generator=generator)) * 1.4 - 0.2, 3)
        cases.append(_case(f"ratio {ratio}, random MAC counts", ratio, reducible, fixed,
                           budget, 0.8))
    return cases


LIMIT_RATIO = Check(
    name="limit_ratio",
    reference=amc.limit_ratio,
    cases=_limit_cases,
    hidden=_hidden_limit,
    compare=close(RATIO_TOLERANCE),
    replaces=("labkit.search.amc.limit_ratio",),
    conventions=(r"\min(\max(r, r_{\min}, 0), r_{\max})", "as a number"),
)


# --- the design challenge: a policy within a MAC budget, above an accuracy bar --------

MAC_BUDGET = 0.4
"""The graded budget: at most this fraction of the dense model's MACs per image."""
MAX_RATIO = 0.8
"""The largest pruning ratio of one conv, as in the lab's AMC environment."""
ACCURACY_BAR = 90.0
"""Validation accuracy (%) the pruned network must reach, without finetuning."""


def policy_outcome(ratios: list[float]) -> tuple[float, float]:
    """MACs (fraction of dense) and validation accuracy (%) of the lab's VGG with its
    channels sorted by importance and each conv pruned by its ratio, not finetuned;
    evaluated on one thread, so the number is the same in every process."""
    digits = data.load("digits")
    model = zoo.pretrained("vgg-digits", progress=False)
    example = torch.zeros(1, *digits.image_shape)
    pruned = channel_prune(apply_channel_sorting(model), list(ratios))
    _, val_loader, _ = digits.loaders(batch_size=64)
    with torch_threads(TRAIN_THREADS):
        accuracy = evaluate(pruned, val_loader)
    return measure.count_macs(pruned, example) / measure.count_macs(model, example), accuracy


def judge_policy_budget(_: object, ratios: object) -> str | None:
    """``None`` when ``ratios`` holds one ratio in [0, :data:`MAX_RATIO`] per conv of the
    lab's VGG, the pruned network keeps at most :data:`MAC_BUDGET` of the dense MACs and
    reaches :data:`ACCURACY_BAR` on the validation split without finetuning."""
    convs = len(channel_groups(zoo.pretrained("vgg-digits", progress=False)))
    if type(ratios) not in (list, tuple) or len(ratios) != convs:
        return (f"expected a list of {convs} pruning ratios, one per conv, got "
                f"{describe_outcome(ratios)}")
    for position, value in enumerate(ratios):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
                not 0 <= value <= MAX_RATIO:
            return f"ratio {position} must be a number in [0, {MAX_RATIO}], got {value!r}"
    macs, accuracy = policy_outcome(list(ratios))
    if macs > MAC_BUDGET:
        return (f"the pruned network keeps {macs:.4f} of the dense MACs, "
                f"{macs - MAC_BUDGET:.4f} above the budget of {MAC_BUDGET}")
    if accuracy < ACCURACY_BAR:
        return (f"within the budget ({macs:.4f} of the dense MACs), but its validation "
                f"accuracy without finetuning is {accuracy:.2f}%, "
                f"{ACCURACY_BAR - accuracy:.2f} points below the bar of {ACCURACY_BAR}%")
    return None


POLICY_BUDGET = Check(
    name="policy_budget",
    reference=lambda: None,
    cases=lambda: [Case("your policy", expected=None)],
    hidden=lambda seed: [],
    observe=lambda function, case: function(),
    compare=judge_policy_budget,
    pure=False,
    conventions=(f"{MAC_BUDGET:.0%} of the dense MACs", f"{ACCURACY_BAR:.0f}%",
                 "without finetuning", f"$[0, {MAX_RATIO}]$"),
)
