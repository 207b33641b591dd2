"""Argument checks shared by every module: a bad value gets an error naming the argument,
the value and the allowed range."""

from __future__ import annotations

import numbers

import torch


def check_sparsity(value: float, argument: str = "sparsity") -> None:
    """``value`` must be a real number in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a real number, got {type(value).__name__}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{argument} must be in [0, 1), got {value!r}")


def check_count(value: int, argument: str, minimum: int = 1) -> None:
    """``value`` must be an int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{argument} must be an int >= {minimum}, got {value!r}")


def check_not_nan(tensor: torch.Tensor, argument: str) -> None:
    """``tensor`` must hold no NaN: a NaN has no rank, so no mask or ranking can place it."""
    if tensor.is_floating_point() and torch.isnan(tensor).any():
        count = int(torch.isnan(tensor).sum())
        raise ValueError(f"{argument} must not contain NaN, got {count} NaN of "
                         f"{tensor.numel()} entries")
