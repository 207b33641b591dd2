"""Checks of lab 01: fine-grained and N:M masks."""

from __future__ import annotations

import torch

from labkit.grading.checks.core import Case, Check, exact
from labkit.pruning import granularity


def weights(seed: int, *shape: int) -> torch.Tensor:
    """Standard-normal weights of ``shape`` from their own seeded generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _fine_grained_cases() -> list[Case]:
    cases = [
        ("sparsity 0 keeps everything", weights(0, 4, 4), 0.0),
        ("half of a 2x3 weight", weights(1, 2, 3), 0.5),
        ("exact zero count: 4-d conv weight at 70% prunes round(288 * 0.7) = 202",
         weights(2, 8, 4, 3, 3), 0.7),
        ("linear weight at 90%", weights(3, 10, 64), 0.9),
        ("ties: four equal weights at 50% keep the first two", torch.ones(4), 0.5),
        ("ties across signs: [1, -1, 1, -1, 2] at 40%",
         torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0]), 0.4),
        ("all-zero weight at 50%", torch.zeros(2, 4), 0.5),
        ("rounding: 10 weights at 25% prune round(2.5) = 2", torch.arange(1.0, 11.0), 0.25),
        ("rounding: 10 weights at 35% prune round(3.5) = 4", torch.arange(1.0, 11.0), 0.35),
        ("a float64 weight: the mask is still bool", weights(4, 3, 5).double(), 0.6),
        ("a non-contiguous (transposed) weight", weights(5, 6, 4).T, 0.5),
        ("sparsity 1.0 is outside [0, 1)", torch.ones(4), 1.0),
        ("sparsity -0.1 is outside [0, 1)", torch.ones(4), -0.1),
    ]
    return [Case(label, (w, s)) for label, w, s in cases]


def _hidden_fine_grained(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for number in range(5):
        shape = tuple(int(d) for d in torch.randint(1, 9, (2 + number % 3,), generator=generator))
        sparsity = round(float(torch.rand(1, generator=generator)) * 0.95, 3)
        weight = torch.randn(shape, generator=generator)
        if number == 3:  # ties: weights drawn from a few values
            weight = torch.randint(-2, 3, shape, generator=generator).float()
        cases.append(Case(f"random {shape} weight at sparsity {sparsity}", (weight, sparsity)))
    return cases


FINE_GRAINED_MASK = Check(
    name="fine_grained_mask",
    reference=granularity.fine_grained_mask,
    cases=_fine_grained_cases,
    hidden=_hidden_fine_grained,
    compare=exact,
    errors=(ValueError,),
    replaces=("labkit.pruning.granularity.fine_grained_mask",
              "labkit.pruning.granularity.granularity_mask"),
    conventions=("round(numel * sparsity)", "row-major", "bool", "not change", "[0, 1)"),
)


def _nm_cases() -> list[Case]:
    cases = [
        ("2:4 on a 4x8 linear weight", weights(0, 4, 8), 2, 4),
        ("1:4 on a 4x8 linear weight", weights(1, 4, 8), 1, 4),
        ("3:4 on a 2x12 linear weight", weights(2, 2, 12), 3, 4),
        ("2:8 on a 3x16 linear weight", weights(3, 3, 16), 2, 8),
        ("2:4 on a 4x8x3x3 conv weight: groups along input channels",
         weights(4, 4, 8, 3, 3), 2, 4),
        ("4:4 keeps everything", weights(5, 2, 8), 4, 4),
        ("ties: all-equal weights keep the first 2 of every 4", torch.ones(2, 8), 2, 4),
        ("m=4 does not divide 6 input features", torch.ones(2, 6), 2, 4),
        ("m=4 does not divide 1 input channel of a conv", torch.ones(8, 1, 3, 3), 2, 4),
        ("n=5 > m=4", torch.ones(2, 8), 5, 4),
        ("n=-1 < 0", torch.ones(2, 8), -1, 4),
    ]
    return [Case(label, (w, n, m)) for label, w, n, m in cases]


def _hidden_nm(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for number, (n, m) in enumerate(((2, 4), (1, 4), (3, 8), (2, 4))):
        rows = int(torch.randint(1, 6, (1,), generator=generator))
        groups = int(torch.randint(1, 4, (1,), generator=generator))
        shape = (rows, m * groups) if number % 2 == 0 else (rows, m * groups, 3, 3)
        cases.append(Case(f"{n}:{m} on a random {shape} weight",
                          (torch.randn(shape, generator=generator), n, m)))
    return cases


NM_MASK = Check(
    name="nm_mask",
    reference=granularity.nm_mask,
    cases=_nm_cases,
    hidden=_hidden_nm,
    compare=exact,
    errors=(ValueError,),
    replaces=("labkit.pruning.granularity.nm_mask", "labkit.pruning.granularity.granularity_mask"),
    conventions=("bool", "lowest input channel", "`n` outside $[0, m]$", "ValueError",
                 "does not change `weight`"),
)
