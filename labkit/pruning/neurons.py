r"""Pruning neurons (channels) by what they compute, not by their weights.

Two criteria from the lecture judge a channel by its *activations* on data:

* **Percentage of zeros** (APoZ, Hu et al. 2016). ReLU outputs many zeros; a channel
  that is almost always zero contributes little. For channel ``c`` of an activation
  ``a`` of shape ``(N, C, H, W)``

  .. math::

      \text{APoZ}_c = \frac{\#\{(n, h, w) : a_{n,c,h,w} = 0\}}{N H W}

  and the channels with the *largest* APoZ are pruned first.

* **Regression-based selection** (He et al. 2017, "channel pruning"). Removing input
  channels of a conv changes its output ``Z``; choose the channels whose removal
  changes it least and then refit the remaining weights. Each output position of a
  conv with ``c`` input channels and weight ``W`` (``n`` outputs) is a sum of per-channel
  contributions, ``Z = sum_c X_c W_c^T`` with ``X_c`` the ``k x k`` input patch of
  channel ``c``. The problem

  .. math::

      \min_{\beta, W} \Big\lVert Z - \sum_c \beta_c X_c W_c^\top \Big\rVert_F^2
      \quad \text{s.t.} \quad \lVert \beta \rVert_0 \le N

  is solved in two steps: a LASSO on ``beta`` (the L1 penalty ``alpha ||beta||_1``
  relaxes the L0 constraint; raising ``alpha`` zeroes more ``beta_c``) picks the ``N``
  channels; least squares on the kept patches then refits ``W`` (the reconstruction).

Pruning an *input* channel of ``conv_{i+1}`` removes an *output* channel of ``conv_i``,
which :func:`labkit.pruning.channels.remove_channels` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from labkit.models import VGG
from labkit.pruning.channels import (
    channel_prune,
    conv_blocks,
    get_input_channel_importance,
    get_num_channels_to_keep,
    remove_channels,
)
from labkit.training import evaluate
from labkit.validation import (
    batches,
    check_choice,
    check_count,
    check_indices,
    check_real,
    check_seed,
    check_tensor,
    parameter_device,
)

if TYPE_CHECKING:
    import pandas as pd

SELECTIONS = ("lasso", "magnitude")
"""How :func:`regression_channel_prune` chooses the channels to keep."""


def apoz(activations: torch.Tensor) -> torch.Tensor:
    """Average percentage of zeros of each channel (dim 1) of ``activations``.

    ``activations``: ``(N, C)`` or ``(N, C, ...)``; returns a float tensor ``(C,)``, the
    fraction of the entries of each channel, over the batch and all positions, that are
    exactly 0. NaN activations are refused (a NaN is not a zero, yet not an activation
    either).
    """
    check_tensor(activations, "activations", kind="any")
    if activations.dim() < 2 or len(activations) == 0:
        raise ValueError(
            f"activations must be (N, C, ...) with a channel dim and N >= 1 samples, got "
            f"shape {tuple(activations.shape)}"
        )
    zeros = (activations == 0).transpose(0, 1).flatten(1)
    return zeros.float().mean(dim=1)


@torch.no_grad()
def collect_apoz(model: nn.Module, loader: DataLoader) -> dict[str, torch.Tensor]:
    """APoZ of every ``nn.ReLU`` output of ``model`` over all of ``loader``, by module name.

    Forward hooks count the zeros per channel batch after batch, so the result equals
    :func:`apoz` of the concatenated activations. Runs in eval mode; the model's mode
    is restored. Each ``nn.ReLU`` module must run once per forward pass: one module
    reused at two places would mix the activations of two layers, and is refused (give
    each place its own ``nn.ReLU()``). A functional ``F.relu`` is not seen at all.
    """
    device = parameter_device(model)
    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    if not relus:
        raise ValueError(f"model has no nn.ReLU module: {type(model).__name__}")
    zeros: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(relus, 0)
    calls: dict[str, int] = dict.fromkeys(relus, 0)

    def counter(name: str):
        def hook(module, inputs, output):
            calls[name] += 1
            if calls[name] > 1:
                raise ValueError(f"nn.ReLU {name!r} runs {calls[name]} times in one forward "
                                 "pass: APoZ would mix the activations of different layers; "
                                 "give each place its own nn.ReLU()")
            per_channel = output.numel() // output.shape[1]
            zeros[name] = zeros.get(name, 0.0) + apoz(output).cpu().double() * per_channel
            counts[name] += per_channel
        return hook

    handles = [relu.register_forward_hook(counter(name)) for name, relu in relus.items()]
    was_training = model.training
    model.eval()
    try:
        for inputs, _ in batches(loader, "loader"):
            calls.update(dict.fromkeys(relus, 0))
            model(inputs.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: (zeros[name] / counts[name]).float() for name in relus}


def lowest_apoz_channels(apoz_per_layer: Mapping[str, torch.Tensor],
                         ratio: float) -> list[torch.Tensor]:
    """The channels APoZ keeps when a fraction ``ratio`` of each layer is pruned: per
    layer of ``apoz_per_layer`` (:func:`collect_apoz`), the
    ``get_num_channels_to_keep(c, ratio)`` channels of lowest APoZ, lowest first (ties in
    channel order), ready for :func:`labkit.pruning.channels.remove_channels`."""
    check_real(ratio, "ratio", 0.0, 1.0, high_open=True)
    return [torch.argsort(values, stable=True)[:get_num_channels_to_keep(values.numel(), ratio)]
            for values in apoz_per_layer.values()]


def channel_selection_accuracy(model: VGG, sorted_model: VGG,
                               apoz_per_layer: Mapping[str, torch.Tensor],
                               val_loader: DataLoader, ratios: Sequence[float]) -> pd.DataFrame:
    """Three ways to choose the channels a ratio keeps, judged without finetuning.

    A row per ratio of ``ratios`` (index ``prune ratio``), the accuracy on ``val_loader``
    of ``model`` with its ``first channels`` kept, of ``sorted_model`` (``model`` with
    channels sorted by importance) with its first channels kept (``L2-sorted``) and of
    ``model`` keeping the channels of ``lowest APoZ`` (:func:`lowest_apoz_channels`).
    """
    import pandas as pd

    if not ratios:
        raise ValueError("ratios must hold at least one ratio, got none")
    rows = {ratio: {"first channels": evaluate(channel_prune(model, ratio), val_loader),
                    "L2-sorted": evaluate(channel_prune(sorted_model, ratio), val_loader),
                    "lowest APoZ": evaluate(remove_channels(
                        model, lowest_apoz_channels(apoz_per_layer, ratio)), val_loader)}
            for ratio in ratios}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("prune ratio")


@dataclass(frozen=True)
class ConvSample:
    """A conv layer's regression problem on sample data.

    ``patches``: ``(M, c, k)``, the input patch ``X_c`` (``k = kh * kw`` values) of each
    input channel at ``M`` sampled output positions; ``outputs``: ``(M, n)``, the conv's
    output ``Z`` there (no bias: the lab's convs have none).
    """

    patches: torch.Tensor
    outputs: torch.Tensor

    @property
    def num_channels(self) -> int:
        return self.patches.shape[1]


def _next_conv(model: VGG, conv_index: int) -> tuple[str, nn.Conv2d]:
    blocks = conv_blocks(model)
    if len(blocks) < 2:
        raise ValueError(f"model must have two convs or more (a conv followed by another), "
                         f"got {len(blocks)}")
    check_count(conv_index, "conv_index", 0, len(blocks) - 2)
    name = blocks[conv_index + 1][0]
    conv = getattr(model.backbone, name)
    if conv.bias is not None:
        raise ValueError(f"conv {name!r} has a bias; the regression assumes Z = sum_c X_c W_c^T")
    return name, conv


@torch.no_grad()
def sample_next_conv(
    model: VGG,
    conv_index: int,
    loader: DataLoader,
    *,
    positions_per_image: int = 10,
    seed: int = 0,
) -> ConvSample:
    """Inputs and outputs of ``conv_{conv_index + 1}`` at random output positions.

    Each image of ``loader`` contributes ``positions_per_image`` output positions drawn
    with ``seed`` (He et al. sample 10 per image). The patches are the conv's input
    unfolded with its own kernel size, padding, stride and dilation.
    """
    check_count(positions_per_image, "positions_per_image", 1)
    seed = check_seed(seed)
    device = parameter_device(model)
    _, conv = _next_conv(model, conv_index)
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = conv.register_forward_hook(
        lambda module, inputs, output: captured.append((inputs[0], output)))
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    patches, outputs = [], []
    try:
        for images, _ in batches(loader, "loader"):
            model(images.to(device))
            x, z = captured.pop()
            unfolded = F.unfold(x, conv.kernel_size, dilation=conv.dilation,
                                padding=conv.padding, stride=conv.stride)
            positions = torch.randint(0, unfolded.shape[2], (x.shape[0], positions_per_image),
                                      generator=generator).to(device)
            rows = torch.arange(x.shape[0], device=device)[:, None]
            patches.append(unfolded.transpose(1, 2)[rows, positions].flatten(0, 1))
            outputs.append(z.flatten(2).transpose(1, 2)[rows, positions].flatten(0, 1))
    finally:
        handle.remove()
        model.train(was_training)
    x_patches = torch.cat(patches).reshape(-1, conv.in_channels, conv.weight[0, 0].numel())
    return ConvSample(x_patches.cpu(), torch.cat(outputs).cpu())


def _check_weight(sample: ConvSample, weight: torch.Tensor, channels: int) -> None:
    check_tensor(weight, "weight")
    expected = (sample.outputs.shape[1], channels, sample.patches.shape[2])
    if weight.dim() != 4 or (weight.shape[0], weight.shape[1], weight[0, 0].numel()) != expected:
        raise ValueError(
            f"weight must be a conv weight (n, c, kh, kw) with (n, c, kh * kw) = {expected}, "
            f"got shape {tuple(weight.shape)}"
        )


def channel_contributions(sample: ConvSample, weight: torch.Tensor) -> torch.Tensor:
    """``Y_c = X_c W_c^T`` for every input channel ``c``: shape ``(M, n, c)``.

    ``sum_c Y_c`` is the conv's output ``Z``; the LASSO weighs each ``Y_c`` by ``beta_c``.
    """
    _check_weight(sample, weight, sample.num_channels)
    return torch.einsum("mck,nck->mnc", sample.patches, weight.detach().flatten(2).cpu())


def lasso_channel_selection(
    sample: ConvSample, weight: torch.Tensor, num_keep: int, *, num_alphas: int = 100
) -> torch.Tensor:
    """The ``num_keep`` input channels a LASSO on ``beta`` keeps (He et al. 2017), sorted.

    Solves ``min_beta 1/(2 M n) ||vec(Z) - sum_c beta_c vec(Y_c)||^2 + alpha ||beta||_1``
    (scikit-learn's ``sklearn.linear_model.lasso_path``) on a geometric grid of
    ``num_alphas`` values from ``alpha_max`` (every ``beta_c = 0``) down to
    ``alpha_max / 1000``. Raising ``alpha`` from there zeroes more and more ``beta_c``;
    the answer is the largest ``alpha`` at which at least ``num_keep`` are non-zero, and
    of those the ``num_keep`` of largest ``|beta_c|``.
    """
    from sklearn.linear_model import lasso_path  # imported on use: it takes a second

    check_count(num_keep, "num_keep", 1, sample.num_channels)
    check_count(num_alphas, "num_alphas", 2)
    contributions = channel_contributions(sample, weight).flatten(0, 1).double().numpy()
    target = sample.outputs.flatten().double().numpy()
    gram = contributions.T @ contributions
    correlation = contributions.T @ target
    alpha_max = np.abs(correlation).max() / len(target)
    if alpha_max == 0:
        raise ValueError("sample explains nothing: no channel's contribution Y_c correlates "
                         "with the outputs Z (all-zero outputs or patches), so every channel "
                         "is as good as any other; sample positions where the layer is active")
    alphas = alpha_max * np.geomspace(1.0, 1e-3, num_alphas)
    _, coefs, _ = lasso_path(contributions, target, alphas=alphas, precompute=gram,
                             Xy=correlation)
    enough = (coefs != 0).sum(axis=0) >= num_keep
    step = int(np.argmax(enough)) if enough.any() else -1
    beta = torch.from_numpy(np.abs(coefs[:, step]))
    chosen = torch.argsort(beta, descending=True, stable=True)[:num_keep]
    return chosen.sort().values


def magnitude_channel_selection(weight: torch.Tensor, num_keep: int) -> torch.Tensor:
    """The ``num_keep`` input channels of largest L2 norm (the data-free baseline), sorted."""
    importance = get_input_channel_importance(weight)
    check_count(num_keep, "num_keep", 1, importance.numel())
    return torch.argsort(importance, descending=True, stable=True)[:num_keep].sort().values


def _kept_patches(sample: ConvSample, keep: torch.Tensor) -> torch.Tensor:
    return sample.patches[:, keep].flatten(1)


def least_squares_weight(
    sample: ConvSample, keep: torch.Tensor, kernel_size: tuple[int, int]
) -> torch.Tensor:
    """Refit the conv on the kept input channels: ``argmin_W ||Z - X_S W^T||_F``.

    ``X_S`` (``M x |S| k``) stacks the kept channels' patches; solved by
    ``torch.linalg.lstsq`` in double precision. Returns a conv weight
    ``(n, |S|, kh, kw)`` for the kept channels in the order of ``keep``.
    """
    keep = check_indices(keep, "keep", sample.num_channels)
    x = _kept_patches(sample, keep).double()
    solution = torch.linalg.lstsq(x, sample.outputs.double()).solution
    weight = solution.T.reshape(sample.outputs.shape[1], keep.numel(), *kernel_size)
    return weight.to(sample.outputs.dtype)


def reconstruction_error(sample: ConvSample, weight: torch.Tensor,
                         keep: torch.Tensor) -> float:
    """Relative error ``||Z - X_S W_S^T||_F^2 / ||Z||_F^2`` with kept channels ``keep``.

    ``weight`` is ``(n, |S|, kh, kw)``: the weights of the kept channels, in the order of
    ``keep`` (the original weight sliced, or a least-squares refit).
    """
    keep = check_indices(keep, "keep", sample.num_channels)
    _check_weight(sample, weight, keep.numel())
    prediction = _kept_patches(sample, keep).double() @ weight.detach().cpu().flatten(1).T.double()
    residual = (sample.outputs.double() - prediction).pow(2).sum()
    total = sample.outputs.double().pow(2).sum()
    if total == 0:
        raise ValueError("sample.outputs are all zero: the error relative to ||Z||_F^2 = 0 is "
                         "undefined; sample positions where the layer is active")
    return (residual / total).item()


def compare_selections(
    fit: ConvSample, weight: torch.Tensor, num_keep: int, held_out: ConvSample | None = None
) -> dict[str, float]:
    """Relative reconstruction error of three ways to keep ``num_keep`` input channels.

    ``"magnitude"``: largest-norm channels, weights unchanged; ``"magnitude + LS"``: the
    same channels, weights refit by least squares; ``"LASSO + LS"``: He et al.'s
    selection and refit. Channels and weights are fit on ``fit``; the errors are
    measured on ``held_out`` (default: ``fit`` itself).
    """
    held_out = fit if held_out is None else held_out
    kernel_size = tuple(weight.shape[2:])
    by_magnitude = magnitude_channel_selection(weight, num_keep)
    by_lasso = lasso_channel_selection(fit, weight, num_keep)
    return {
        "magnitude": reconstruction_error(held_out, weight[:, by_magnitude], by_magnitude),
        "magnitude + LS": reconstruction_error(
            held_out, least_squares_weight(fit, by_magnitude, kernel_size), by_magnitude),
        "LASSO + LS": reconstruction_error(
            held_out, least_squares_weight(fit, by_lasso, kernel_size), by_lasso),
    }


def selection_errors(fit: ConvSample, weight: torch.Tensor, counts: Sequence[int],
                     held_out: ConvSample | None = None) -> pd.DataFrame:
    """:func:`compare_selections` for each number of kept channels in ``counts``: a row
    per count (index ``channels kept``), a column per way of keeping them."""
    import pandas as pd

    if not counts:
        raise ValueError("counts must hold at least one number of channels, got none")
    rows = {count: compare_selections(fit, weight, count, held_out) for count in counts}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("channels kept")


def regression_channel_prune(
    model: VGG,
    conv_index: int,
    num_keep: int,
    loader: DataLoader,
    *,
    selection: str = "lasso",
    refit: bool = True,
    positions_per_image: int = 10,
    seed: int = 0,
) -> VGG:
    """A new VGG keeping ``num_keep`` output channels of ``conv_{conv_index}``, chosen by
    LASSO and with ``conv_{conv_index + 1}`` refit by least squares (He et al. 2017).

    The regression uses the sample of :func:`sample_next_conv` on ``loader`` (training
    data: the refit is a fit). ``selection="magnitude"`` keeps the channels of largest
    norm instead (:func:`magnitude_channel_selection`) and ``refit=False`` leaves the
    next conv's remaining weights as they were: the baselines He et al. compare with.
    ``model`` is not changed.
    """
    check_choice(selection, "selection", SELECTIONS)
    name, conv = _next_conv(model, conv_index)
    check_count(num_keep, "num_keep", 1, conv.in_channels)
    sample = sample_next_conv(model, conv_index, loader,
                              positions_per_image=positions_per_image, seed=seed)
    chosen = (lasso_channel_selection(sample, conv.weight, num_keep) if selection == "lasso"
              else magnitude_channel_selection(conv.weight, num_keep))
    keep = [torch.arange(getattr(model.backbone, c).out_channels) for c, _ in conv_blocks(model)]
    keep[conv_index] = chosen
    pruned = remove_channels(model, keep)
    if refit:
        with torch.no_grad():
            getattr(pruned.backbone, name).weight.copy_(
                least_squares_weight(sample, chosen, conv.kernel_size))
    return pruned
