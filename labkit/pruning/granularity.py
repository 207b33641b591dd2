"""Pruning granularity: *which* weights are pruned together.

Every function here is a pure function of a weight tensor that returns a boolean
**keep-mask** of the weight's shape (``True`` = keep, ``False`` = prune). From the
finest to the coarsest granularity (Mao et al. 2017, the lecture's figure):

* **fine-grained**: any single weight (Han et al. 2015);
* **pattern (N:M)**: N kept in every group of M consecutive weights along the input
  dimension, the 2:4 pattern of NVIDIA's sparse Tensor Cores (Mishra et al. 2021);
* **vector**: a row of a kernel, ``weight[o, i, r, :]``;
* **kernel**: a whole ``k x k`` kernel, ``weight[o, i]``;
* **channel**: a whole output channel (a filter, or a row of a linear weight),
  ``weight[o]`` (Li et al. 2017).

The criterion is magnitude throughout: ``|w|`` for single weights, the L2 norm for
groups. A linear weight ``(out, in)`` is treated as a conv weight with a ``1 x 1``
kernel, so its vectors and kernels are single weights.

``sparsity`` is the fraction of elements (or groups) to prune, in ``[0, 1)``; exactly
``round(count * sparsity)`` of them are pruned (Python's ``round``, as
``torch.nn.utils.prune.l1_unstructured`` does). **Ties** are broken by position:
among equal scores, the element that comes first in row-major order is kept.
"""

from __future__ import annotations

import numbers

import torch

from labkit.pruning.criteria import row_norm
from labkit.validation import check_sparsity, check_tensor

GRANULARITIES = ("fine-grained", "pattern", "vector", "kernel", "channel")
"""The granularities :func:`granularity_mask` knows, from finest to coarsest."""


def _check_weight(weight: torch.Tensor, argument: str = "weight", *, finite: bool = True) -> None:
    check_tensor(weight, argument, kind="real", finite=finite)


def _check_conv_or_linear(weight: torch.Tensor, granularity: str) -> torch.Tensor:
    """The weight as a 4-D conv weight: a linear ``(out, in)`` becomes ``(out, in, 1, 1)``."""
    _check_weight(weight)
    if weight.dim() == 2:
        return weight[:, :, None, None]
    if weight.dim() == 4:
        return weight
    raise ValueError(
        f"{granularity} pruning needs a 2-D linear or 4-D conv weight, "
        f"got a {weight.dim()}-D tensor of shape {tuple(weight.shape)}"
    )


def mask_from_scores(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the highest ``scores``; prune exactly ``p = round(scores.numel() * sparsity)``.

    The building block of every mask, a selection rather than a sort: the ``p``-th
    smallest score ``t`` (``torch.kthvalue``, linear time) splits the scores into those
    above ``t`` (kept), below ``t`` (pruned) and equal to ``t``, of which the first in
    row-major order are kept until ``numel - p`` are kept. That is the mask of a stable
    descending sort keeping its first ``numel - p``: of two equal scores the earlier one
    is kept. Scores of any shape, any criterion (magnitude, OBD, Taylor, ...); a NaN
    or infinite score has no rank and raises ``ValueError``.
    """
    _check_weight(scores, "scores")
    check_sparsity(sparsity)
    return _keep_highest(scores, sparsity)


def _keep_highest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """:func:`mask_from_scores` on checked arguments."""
    flat = scores.detach().flatten()
    num_prune = round(flat.numel() * sparsity)
    if num_prune == 0:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    threshold = flat.kthvalue(num_prune).values
    keep = flat > threshold
    ties_to_keep = flat.numel() - num_prune - int(keep.sum())
    if ties_to_keep:
        tied = flat == threshold
        keep |= tied & (tied.cumsum(0) <= ties_to_keep)
    return keep.reshape(scores.shape)


def fine_grained_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the ``round(numel * sparsity)`` weights of smallest magnitude ``|w|``.

    Fine-grained (unstructured) magnitude pruning, Han et al. 2015. Equal to
    ``torch.nn.utils.prune.l1_unstructured``'s mask when ``|weight|`` has no ties.
    """
    _check_weight(weight)
    check_sparsity(sparsity)
    return _keep_highest(weight.detach().abs(), sparsity)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M pattern: keep the ``n`` largest ``|w|`` in every group of ``m`` input weights.

    Groups are ``m`` consecutive **input channels** at the same output channel and
    kernel position, ``weight[o, i:i+m, r, c]`` (for a linear weight,
    ``weight[o, i:i+m]``): the reduction dimension of the convolution seen as a matrix
    product in channels-last layout, which is how NVIDIA's sparse Tensor Cores and its
    ASP library lay out 2:4 sparsity (Mishra et al. 2021). Sparsity is ``1 - n / m``.

    Raises ``ValueError`` when ``n`` is outside ``[0, m]`` or ``m`` does not divide the
    number of input channels ``weight.shape[1]``.
    """
    _check_weight(weight)
    for argument, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{argument} must be an int, got {type(value).__name__}")
    if m < 1:
        raise ValueError(f"m must be a positive int, got {m}")
    if not 0 <= n <= m:
        raise ValueError(f"n must be in [0, m] = [0, {m}], got n={n}")
    if weight.dim() < 2:
        raise ValueError(
            f"N:M pruning needs an input dimension (dim 1): got a {weight.dim()}-D tensor"
        )
    in_channels = weight.shape[1]
    if in_channels % m != 0:
        raise ValueError(
            f"m={m} must divide the input dimension weight.shape[1]={in_channels}"
        )
    channels_last = weight.detach().abs().movedim(1, -1)
    groups = channels_last.reshape(-1, m)
    ranking = torch.sort(groups, dim=1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, ranking[:, :n], True)
    return keep.reshape(channels_last.shape).movedim(-1, 1)


def _spread(group_keep: torch.Tensor, conv: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A keep-mask over groups (the leading dims of ``conv``) spread back over ``weight``."""
    trailing = [1] * (conv.dim() - group_keep.dim())
    spread = group_keep.reshape(*group_keep.shape, *trailing).expand(conv.shape)
    return spread.reshape(weight.shape).contiguous()


def vector_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune whole kernel rows ``weight[o, i, r, :]``, those of smallest L2 norm."""
    conv = _check_conv_or_linear(weight, "vector")
    return _spread(mask_from_scores(conv.detach().norm(dim=3), sparsity), conv, weight)


def kernel_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune whole ``k x k`` kernels ``weight[o, i]``, those of smallest L2 norm."""
    conv = _check_conv_or_linear(weight, "kernel")
    return _spread(mask_from_scores(conv.detach().flatten(2).norm(dim=2), sparsity), conv, weight)


def channel_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune whole output channels ``weight[o]``, those of smallest L2 norm (Li et al. 2017).

    Any weight with an output dimension (``dim() >= 2``); a 1-D tensor raises
    ``ValueError``.
    """
    _check_weight(weight, finite=False)  # row_norm refuses NaN and infinity itself
    if weight.dim() < 2:
        raise ValueError(
            f"channel pruning needs a weight with output channels (dim() >= 2), "
            f"got a {weight.dim()}-D tensor of shape {tuple(weight.shape)}"
        )
    return _spread(mask_from_scores(row_norm(weight.detach(), p=2), sparsity), weight, weight)


def granularity_mask(
    weight: torch.Tensor, sparsity: float, granularity: str, *, m: int = 4
) -> torch.Tensor:
    """The keep-mask of ``weight`` at ``sparsity`` for a granularity named in
    :data:`GRANULARITIES`.

    ``"pattern"`` is the N:M pattern nearest to ``sparsity`` that keeps a weight in
    every group: ``n = max(1, m - round(m * sparsity))`` kept in every group of ``m``
    (2:4 at sparsity 0.5). Where ``m - round(m * sparsity)`` is 0 (from sparsity 0.875
    for ``m = 4``) that is 1:m, the sparsest pattern, not an empty layer.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "pattern":
        check_sparsity(sparsity)
        return nm_mask(weight, max(1, m - round(m * sparsity)), m)
    masks = {"fine-grained": fine_grained_mask, "vector": vector_mask,
             "kernel": kernel_mask, "channel": channel_mask}
    return masks[granularity](weight, sparsity)
