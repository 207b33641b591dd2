"""Checks of lab 00: sparsity and model size."""

from __future__ import annotations

import torch

from labkit import measure
from labkit.grading.checks.core import Case, Check, close
from labkit.models import MLP, VGG


def _tensors() -> list[tuple[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    half = torch.randn(8, 8, generator=generator)
    half[half.abs() < half.abs().median()] = 0
    return [
        ("all non-zero", torch.arange(1.0, 7.0).reshape(2, 3)),
        ("all zero", torch.zeros(3, 4)),
        ("one zero of four", torch.tensor([1.0, 0.0, -2.0, 3.0])),
        ("about half zero, 8x8", half),
        ("4-d conv weight", torch.tensor([0.0, 1.0] * 27).reshape(3, 2, 3, 3)),
        ("negative values only", -torch.ones(5)),
        ("a single zero element", torch.zeros(1)),
    ]


def _hidden_tensors(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for number in range(4):
        shape = tuple(int(d) for d in torch.randint(1, 7, (1 + number % 3,), generator=generator))
        tensor = torch.randn(shape, generator=generator)
        tensor[torch.rand(shape, generator=generator) < 0.1 + 0.25 * number] = 0
        cases.append(Case(f"random {shape} tensor", (tensor,)))
    return cases


GET_SPARSITY = Check(
    name="get_sparsity",
    reference=measure.get_sparsity,
    cases=lambda: [Case(label, (t,)) for label, t in _tensors()],
    hidden=_hidden_tensors,
    compare=close(),
    replaces=("labkit.measure.get_sparsity",),
    conventions=("a number",),
)


def _model_size_cases(models: list[tuple[str, torch.nn.Module]]) -> list[Case]:
    return [Case(f"{label}, {width}-bit, count_nonzero_only={nonzero}", (model, width, nonzero))
            for label, model in models for width in (32, 8) for nonzero in (False, True)]


def _models() -> list[tuple[str, torch.nn.Module]]:
    torch.manual_seed(0)
    pruned = VGG((4, "M", 8))
    with torch.no_grad():
        pruned.backbone.conv0.weight[:2] = 0
        pruned.classifier.weight[:, ::2] = 0
    return [("small VGG", VGG((4, "M", 8))), ("MLP", MLP(16, (8,), 4)),
            ("VGG with zeroed weights", pruned)]


def _hidden_models(seed: int) -> list[Case]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    hidden = int(torch.randint(3, 12, (1,), generator=generator))
    model = MLP(int(torch.randint(4, 20, (1,), generator=generator)), (hidden,), 3)
    with torch.no_grad():
        weight = model.layers[1].weight
        weight[torch.rand(weight.shape, generator=generator) < 0.4] = 0
    return _model_size_cases([(f"random MLP with {hidden} hidden units, some weights zero",
                               model)])


def _parameter_bits(model: torch.nn.Module, data_width: int = 32,
                    count_nonzero_only: bool = False) -> int:
    """The exercise's definition: bits of the parameters (buffers are not asked for)."""
    return measure.num_parameters(model, count_nonzero_only=count_nonzero_only) * data_width


GET_MODEL_SIZE = Check(
    name="get_model_size",
    reference=_parameter_bits,
    cases=lambda: _model_size_cases(_models()),
    hidden=_hidden_models,
    compare=close(),
    replaces=("labkit.measure.model_size_bits", "labkit.measure.num_parameters"),
    conventions=("parameters", "an integer"),
)
