"""Argument checks shared by every module: a bad value gets an error naming the argument,
the value and what is allowed.

``TypeError`` when the kind of value is wrong (a list where a tensor belongs, a bool where
a count belongs), ``ValueError`` when the kind is right and the value is not (a NaN, a
negative count, an empty loader). NumPy scalars count as the Python numbers they stand
for (``numpy.int64(3)`` is an int, ``numpy.float32(0.5)`` a real number).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise

import torch
from torch import nn

SEED_RANGE = (0, 2**32 - 1)
"""Seeds every generator labkit seeds accepts (NumPy's is the narrowest)."""

TENSOR_KINDS = ("any", "real", "floating", "integer")
"""What :func:`check_tensor` may ask of a tensor's dtype: anything; a real number (integer
or floating point, not bool or complex); floating point only; integer only (not bool)."""


def _type_name(value: object) -> str:
    return type(value).__name__


def check_sparsity(value: float, argument: str = "sparsity") -> None:
    """``value`` must be a real number in ``[0, 1)`` (NaN is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a real number, got {_type_name(value)} {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{argument} must be in [0, 1), got {value!r}")


def check_sparsities(values: Sequence[float], argument: str = "sparsities", *,
                     increasing: bool = False) -> None:
    """``values`` must be a non-empty list of sparsities (:func:`check_sparsity`), and
    strictly increasing when ``increasing`` (the steps of a schedule)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{argument} must be a list of sparsities, got "
                        f"{_type_name(values)} {values!r}")
    if len(values) == 0:
        raise ValueError(f"{argument} must hold at least one sparsity, got an empty list")
    for value in values:
        check_sparsity(value, argument)
    if increasing:
        for before, after in pairwise(values):
            if after <= before:
                raise ValueError(f"{argument} must be strictly increasing, got {before!r} "
                                 f"then {after!r} in {list(values)}")


def check_count(value: int, argument: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` must be an int in ``[minimum, maximum]`` (no upper bound when ``maximum`` is
    None); returns it as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument} must be an int, got {_type_name(value)} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{argument} must be an int {allowed}, got {value!r}")
    return int(value)


def check_real(
    value: float,
    argument: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` must be a finite real number in the interval from ``low`` to ``high``
    (each end closed unless ``*_open``); returns it as a Python float. NaN and infinities
    are refused whatever the interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a real number, got {_type_name(value)} {value!r}")
    inside = math.isfinite(value) and (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high)
    if not inside:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{argument} must be a finite number in {interval}, got {value!r}")
    return float(value)


def check_seed(seed: int, argument: str = "seed") -> int:
    """``seed`` must be an int in :data:`SEED_RANGE` (``None`` is not a seed: runs must
    repeat)."""
    if seed is None:
        raise TypeError(f"{argument} must be an int in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], "
                        "got None: every random choice in labkit takes a fixed seed")
    return check_count(seed, argument, *SEED_RANGE)


def check_choice(value: object, argument: str, choices: Sequence) -> None:
    """``value`` must be one of ``choices``."""
    if not any(value is choice or (type(value) is type(choice) and value == choice)
               for choice in choices):
        raise ValueError(f"{argument} must be one of {tuple(choices)}, got {value!r}")


def check_tensor(
    value: torch.Tensor, argument: str, *, kind: str = "real", finite: bool = True,
    ndim: int | None = None,
) -> None:
    """``value`` must be a ``torch.Tensor`` of a dtype of ``kind`` (:data:`TENSOR_KINDS`),
    with ``ndim`` dimensions when given, and no NaN or infinity when ``finite``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {_type_name(value)}")
    is_integer = not value.is_floating_point() and not value.is_complex() \
        and value.dtype != torch.bool
    allowed = {"any": True, "real": value.is_floating_point() or is_integer,
               "floating": value.is_floating_point(), "integer": is_integer}
    if kind not in allowed:
        raise ValueError(f"kind must be one of {TENSOR_KINDS}, got {kind!r}")
    if not allowed[kind]:
        wanted = {"real": "a real (integer or floating-point) dtype",
                  "floating": "a floating-point dtype", "integer": "an integer dtype"}[kind]
        raise TypeError(f"{argument} must have {wanted}, got dtype {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{argument} must be {ndim}-D, got shape {tuple(value.shape)}")
    if finite and (value.is_floating_point() or value.is_complex()):
        if value.is_floating_point() and value.numel() and all(
                torch.isfinite(end) for end in torch.aminmax(value.detach())):
            return  # NaN reaches the min and max, infinities are them: one fast pass
        bad = ~torch.isfinite(value.detach())
        if bad.any():
            where = tuple(bad.nonzero()[0].tolist())
            raise ValueError(f"{argument} must be finite: it holds {int(bad.sum())} NaN or "
                             f"infinite entries, the first at index {where}")


def check_module(value: nn.Module, argument: str = "model") -> None:
    """``value`` must be a ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{argument} must be a torch.nn.Module, got {_type_name(value)}")


def parameter_device(model: nn.Module, argument: str = "model") -> torch.device:
    """The device of ``model``'s parameters; a model without parameters is refused."""
    check_module(model, argument)
    parameter = next(model.parameters(), None)
    if parameter is None:
        raise ValueError(f"{argument} ({type(model).__name__}) has no parameters: there is "
                         "nothing to train, evaluate on a device or prune")
    return parameter.device


def check_loader(loader: Iterable, argument: str) -> None:
    """``loader`` must be iterable and, where it has a length, not empty."""
    if not isinstance(loader, Iterable) or isinstance(loader, (str, bytes, torch.Tensor)):
        raise TypeError(f"{argument} must be a DataLoader or an iterable of (inputs, labels) "
                        f"batches, got {_type_name(loader)}")
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError(f"{argument} is empty: it yields no batch")


def batches(loader: Iterable, argument: str) -> Iterator:
    """The batches of ``loader``; raises ``ValueError`` at the end when there was none (so
    an empty loader never becomes a division by zero or a ``StopIteration``)."""
    check_loader(loader, argument)
    count = 0
    for batch in loader:
        count += 1
        yield batch
    if count == 0:
        raise ValueError(f"{argument} is empty: it yields no batch")


def check_names(value: Sequence[str], argument: str) -> tuple[str, ...]:
    """``value`` must be a sequence of names (strings); one string is refused, since it
    would be read as a sequence of its characters."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{argument} must be a list of names, got the single string {value!r} "
                        f"(write [{value!r}])")
    if not isinstance(value, Iterable):
        raise TypeError(f"{argument} must be a list of names, got {_type_name(value)}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{argument} must hold names (str), got {_type_name(name)} "
                            f"{name!r}")
    return names


def check_indices(value: torch.Tensor | Sequence[int], argument: str, size: int) -> torch.Tensor:
    """``value`` must be distinct integer indices into ``range(size)`` (a 1-D integer tensor
    or a sequence of ints, not floats or bools, which would be truncated or read as a
    mask); returns them as an int64 tensor."""
    if isinstance(value, torch.Tensor):
        check_tensor(value, argument, kind="integer", ndim=1)
        indices = value.long()
    else:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise TypeError(f"{argument} must be a sequence of ints, got {_type_name(value)}")
        entries = list(value)
        for entry in entries:
            if isinstance(entry, bool) or not isinstance(entry, numbers.Integral):
                raise TypeError(f"{argument} must hold ints, got {_type_name(entry)} "
                                f"{entry!r}")
        indices = torch.tensor([int(entry) for entry in entries], dtype=torch.long)
    if indices.numel() and not 0 <= int(indices.min()) <= int(indices.max()) < size:
        raise ValueError(f"{argument} must lie in [0, {size - 1}], got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    if indices.unique().numel() != indices.numel():
        raise ValueError(f"{argument} must not repeat an index, got {indices.tolist()}")
    return indices


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The modules of ``model`` that own a weight of two or more dimensions (a parameter
    named ``weight``, ``*_weight`` or ``weight_*``, as torch names them), by name."""
    def is_weight(name: str, parameter: torch.Tensor) -> bool:
        return (name == "weight" or name.endswith("_weight") or name.startswith("weight_")) \
            and parameter.dim() >= 2

    return {name: module for name, module in model.named_modules()
            if any(is_weight(p_name, p) for p_name, p in module.named_parameters(recurse=False))}


def check_layer_types(
    model: nn.Module, supported: tuple[type, ...], left_dense: tuple[type, ...],
    argument: str = "model",
) -> None:
    """Every weight layer of ``model`` (:func:`weight_layers`) must be of a ``supported``
    type or of a type that is ``left_dense`` on purpose; any other is refused by name, so
    that no layer is silently skipped (and the model reported pruned when it is not)."""
    check_module(model, argument)
    for name, module in weight_layers(model).items():
        if not isinstance(module, supported + left_dense):
            raise TypeError(
                f"{argument} has a layer {name or '(the model itself)'!r} of type "
                f"{type(module).__name__}, which labkit does not prune; supported: "
                f"{[t.__name__ for t in supported]} (left dense: "
                f"{[t.__name__ for t in left_dense]})")
