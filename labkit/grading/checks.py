"""The exercise checks the labs call.

A check runs a student's function on several cases (edge cases included) and
compares each result with labkit's reference implementation. On success it prints
exactly one deterministic line, ``<name>: <n>/<n> cases passed``, which nbval compares
with the instructor notebook's stored output. On the first failing case it raises
:class:`CheckFailed` saying which case failed, what was expected and what came back,
so a student knows what to fix and the grader records why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from labkit import measure
from labkit.models import MLP, VGG


class CheckFailed(AssertionError):
    """A student function gave a wrong answer (or raised) on a named case."""


@dataclass
class Case:
    """One call of the student's function: a name, the arguments, the expected value."""

    name: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)


def _same(expected: Any, actual: Any, tolerance: float) -> bool:
    if isinstance(expected, torch.Tensor):
        return (isinstance(actual, torch.Tensor) and actual.shape == expected.shape
                and actual.dtype == expected.dtype
                and torch.allclose(actual.double(), expected.double(), atol=tolerance, rtol=0))
    if isinstance(expected, float):
        return isinstance(actual, (int, float)) and math.isclose(
            float(actual), expected, rel_tol=tolerance, abs_tol=tolerance)
    return type(actual) is type(expected) and actual == expected


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, values={value.tolist()})" \
            if value.numel() <= 16 else f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    return repr(value)


def run_check(
    name: str, function: Callable, cases: Sequence[Case], tolerance: float = 1e-6
) -> None:
    """Run ``function`` on every case; print one line or raise :class:`CheckFailed`."""
    if not callable(function):
        raise TypeError(f"{name}: expected a function, got {type(function).__name__}")
    for case in cases:
        try:
            actual = function(*case.args, **case.kwargs)
        except NotImplementedError as error:
            raise CheckFailed(f"{name}: not implemented yet (case {case.name!r})") from error
        except Exception as error:
            raise CheckFailed(
                f"{name}: case {case.name!r} raised {type(error).__name__}: {error}"
            ) from error
        if not _same(case.expected, actual, tolerance):
            raise CheckFailed(
                f"{name}: case {case.name!r} failed: expected {_show(case.expected)}, "
                f"got {_show(actual)}"
            )
    print(f"{name}: {len(cases)}/{len(cases)} cases passed")


def _tensor_cases() -> list[tuple[str, torch.Tensor]]:
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
    ]


def check_get_sparsity(get_sparsity: Callable[[torch.Tensor], float]) -> None:
    """Lab 00: ``get_sparsity(tensor)`` is the fraction of zero elements."""
    cases = [Case(label, (t,), measure.get_sparsity(t)) for label, t in _tensor_cases()]
    run_check("get_sparsity", get_sparsity, cases)


def _model_cases() -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    pruned = VGG((4, "M", 8))
    with torch.no_grad():
        pruned.backbone.conv0.weight[:2] = 0
        pruned.classifier.weight[:, ::2] = 0
    return [("small VGG", VGG((4, "M", 8))), ("MLP", MLP(16, (8,), 4)),
            ("VGG with zeroed weights", pruned)]


def check_get_model_size(get_model_size: Callable[..., int]) -> None:
    """Lab 00: ``get_model_size(model, data_width, count_nonzero_only)`` in bits."""
    cases = []
    for label, model in _model_cases():
        for width in (32, 8):
            for nonzero in (False, True):
                expected = measure.model_size_bits(model, width, count_nonzero_only=nonzero)
                cases.append(Case(f"{label}, {width}-bit, count_nonzero_only={nonzero}",
                                  (model, width, nonzero), expected))
    run_check("get_model_size", get_model_size, cases)
