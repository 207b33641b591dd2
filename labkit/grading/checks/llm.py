"""Checks of lab 08: Wanda's mask, the OBS update of one pruned column, an N:M mask from
scores."""

from __future__ import annotations

import torch

from labkit.grading.checks.core import Case, Check, close, exact
from labkit.pruning import llm


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(seed: int, rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and input norms of very different sizes, as a transformer's are."""
    generator = _generator(seed)
    weight = torch.randn(rows, columns, generator=generator)
    norms = torch.rand(columns, generator=generator) * 10 ** torch.randint(
        0, 3, (columns,), generator=generator)
    return weight, norms


def _wanda_cases() -> list[Case]:
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0]])
    norms = torch.tensor([4.0, 1.0, 1.0, 0.5])
    cases = [
        ("the 2x4 example of the text at 50%", (weight, norms, 0.5)),
        ("sparsity 0 keeps everything", (*_layer(0, 3, 8), 0.0)),
        ("a 6x16 layer at 50%: every row keeps 8", (*_layer(1, 6, 16), 0.5)),
        ("a 4x10 layer at 25%: every row prunes round(2.5) = 2", (*_layer(2, 4, 10), 0.25)),
        ("a 4x10 layer at 35%: every row prunes round(3.5) = 4", (*_layer(3, 4, 10), 0.35)),
        ("one large input norm outweighs larger weights", (
            torch.tensor([[5.0, 4.0, 0.5, 3.0]]), torch.tensor([0.1, 0.1, 100.0, 1.0]), 0.5)),
        ("ties keep the lower column index", (torch.ones(2, 4), torch.ones(4), 0.5)),
        ("a transposed (non-contiguous) weight", (_layer(4, 8, 5)[0].T, _layer(4, 5, 8)[1], 0.6)),
        ("sparsity 1.0 is outside [0, 1)", (*_layer(5, 2, 4), 1.0)),
        ("input_norms of the wrong length", (torch.ones(2, 4), torch.ones(3), 0.5)),
    ]
    return [Case(label, args) for label, args in cases]


def _hidden_wanda(seed: int) -> list[Case]:
    generator = _generator(seed)
    cases = []
    for number in range(4):
        rows, columns = (int(d) for d in torch.randint(1, 20, (2,), generator=generator))
        sparsity = round(float(torch.rand(1, generator=generator)) * 0.9, 3)
        weight, norms = _layer(seed + number, rows, columns)
        cases.append(Case(f"random {rows}x{columns} layer at {sparsity}",
                          (weight, norms, sparsity)))
    return cases


WANDA_MASK = Check(
    name="wanda_mask",
    reference=llm.wanda_mask,
    cases=_wanda_cases,
    hidden=_hidden_wanda,
    compare=exact,
    errors=(ValueError,),
    replaces=("labkit.pruning.llm.wanda_mask", "labkit.pruning.llm.wanda_score",
              "labkit.pruning.llm.row_mask", "labkit.pruning.llm.mask"),
    conventions=("within each output row", "round(in_features * sparsity)",
                 "lower column index", "bool", "[0, 1)"),
)


def _obs_problem(seed: int, rows: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and the inverse-Hessian factor of random correlated inputs."""
    generator = _generator(seed)
    weight = torch.randn(rows, columns, generator=generator)
    inputs = torch.randn(4 * columns, columns, generator=generator) @ torch.randn(
        columns, columns, generator=generator)
    hessian = 2 * inputs.T @ inputs / inputs.shape[0]
    return weight, llm.inverse_hessian_factor(hessian).float()


def _obs_cases() -> list[Case]:
    cases = []
    for number, (rows, columns, column, kept) in enumerate((
            (3, 6, 0, (True, False, False)), (4, 8, 3, (False, True, False, True)),
            (2, 5, 4, (False, False)), (4, 8, 2, (True, True, True, True)),
            (5, 12, 7, (False,) * 5))):
        weight, factor = _obs_problem(number, rows, columns)
        label = (f"column {column} of a {rows}x{columns} weight, pruning rows "
                 f"{[r for r, k in enumerate(kept) if not k]}")
        cases.append(Case(label, (weight, factor, column, torch.tensor(kept))))
    return cases


def _hidden_obs(seed: int) -> list[Case]:
    generator = _generator(seed)
    cases = []
    for number in range(4):
        rows, columns = (int(d) for d in torch.randint(2, 12, (2,), generator=generator))
        column = int(torch.randint(0, columns, (1,), generator=generator))
        kept = torch.rand(rows, generator=generator) < 0.5
        weight, factor = _obs_problem(seed + number, rows, columns)
        cases.append(Case(f"random {rows}x{columns} weight, column {column}",
                          (weight, factor, column, kept)))
    return cases


OBS_UPDATE = Check(
    name="obs_update",
    reference=llm.obs_update,
    cases=_obs_cases,
    hidden=_hidden_obs,
    compare=close(),
    replaces=("labkit.pruning.llm.obs_update", "labkit.pruning.llm.sparsegpt",
              "labkit.pruning.llm.sparsegpt_reference"),
    conventions=("U[c, c]", "new tensor", "columns before"),
)


def _nm_cases() -> list[Case]:
    generator = _generator(0)
    cases = [
        ("2:4 on a 3x8 score", (torch.rand(3, 8, generator=generator), 2, 4)),
        ("1:4 on a 2x12 score", (torch.rand(2, 12, generator=generator), 1, 4)),
        ("2:8 on a 4x16 score", (torch.rand(4, 16, generator=generator), 2, 8)),
        ("4:4 keeps everything", (torch.rand(2, 8, generator=generator), 4, 4)),
        ("ties keep the lower index", (torch.ones(2, 8), 2, 4)),
        ("zeros and ties together", (torch.tensor([[0.0, 3.0, 0.0, 3.0, 1.0, 1.0, 1.0, 1.0]]),
                                     2, 4)),
        ("m=4 does not divide 6 inputs", (torch.rand(2, 6, generator=generator), 2, 4)),
        ("n=5 > m=4", (torch.rand(2, 8, generator=generator), 5, 4)),
        ("a negative score", (torch.tensor([[1.0, -1.0, 2.0, 0.5]]), 2, 4)),
    ]
    return [Case(label, args) for label, args in cases]


def _hidden_nm(seed: int) -> list[Case]:
    generator = _generator(seed)
    cases = []
    for n, m in ((2, 4), (1, 2), (3, 8), (2, 4)):
        rows = int(torch.randint(1, 8, (1,), generator=generator))
        groups = int(torch.randint(1, 5, (1,), generator=generator))
        scores = torch.rand(rows, m * groups, generator=generator)
        cases.append(Case(f"{n}:{m} on a random {rows}x{m * groups} score", (scores, n, m)))
    return cases


NM_SCORE_MASK = Check(
    name="nm_score_mask",
    reference=llm.nm_score_mask,
    cases=_nm_cases,
    hidden=_hidden_nm,
    compare=exact,
    errors=(ValueError,),
    replaces=("labkit.pruning.llm.nm_score_mask", "labkit.pruning.llm.mask",
              "labkit.pruning.granularity.nm_mask"),
    conventions=("consecutive inputs", "lower index", "ValueError", "bool"),
)
