"""Checks of lab 05: AMC's budget rule."""

from __future__ import annotations

import torch

from labkit.grading.checks.core import Case, Check, close
from labkit.search import amc


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
    compare=close(1e-9),
    replaces=("labkit.search.amc.limit_ratio",),
)
