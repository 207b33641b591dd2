"""Applying masks to a model and keeping them through finetuning.

A mask is a boolean tensor of a parameter's shape (``True`` = keep); a model's masks
are a dict from parameter name (``"backbone.conv1.weight"``, as in
``model.named_parameters()``) to mask. Masking sets the pruned weights to zero; it does
not make the model smaller or faster (that is channel removal, or sparse kernels).

During finetuning, SGD with momentum and weight decay moves pruned weights away from
zero again (the momentum buffer remembers past gradients). The :class:`Pruner` is
called after every optimizer step (``train(..., after_step=[pruner])``) and zeroes
them again, so the model the forward pass sees always has exactly the pruned
weights at zero, as in the original lab's ``FineGrainedPruner`` (Han et al. 2015).

To compare criteria, a model is masked at a range of sparsities and judged without
finetuning: :func:`accuracy_by_sparsity` for importance scores (each layer keeps its
largest scores), :func:`slimming_accuracy` for network slimming's global channel ranking.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import fx, nn
from torch.utils.data import DataLoader

from labkit.measure import get_sparsity, prunable_layers
from labkit.pruning.criteria import BATCHNORM_TYPES, scaling_factors
from labkit.pruning.granularity import granularity_mask, mask_from_scores
from labkit.training import evaluate
from labkit.validation import check_module, check_sparsities, check_sparsity

if TYPE_CHECKING:
    import pandas as pd


class Pruner:
    """Zero the masked-out weights of ``model``, now and after every optimizer step.

    ``masks`` maps parameter names to boolean keep-masks of the parameter's shape. The
    pruner acts **in place** on the model it is given (that is its job during
    finetuning); :func:`apply_masks` returns a pruned copy instead.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        check_module(model)
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a dict from parameter name to bool tensor, got "
                            f"{type(masks).__name__}")
        parameters = dict(model.named_parameters())
        self.model = model
        self.masks: dict[str, torch.Tensor] = {}
        for name, mask in masks.items():
            if name not in parameters:
                raise ValueError(
                    f"masks names a parameter {name!r} that the model does not have; "
                    f"parameters are {sorted(parameters)}"
                )
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"mask of {name!r} must be a torch.bool tensor, got "
                                f"{getattr(mask, 'dtype', type(mask).__name__)}")
            if mask.shape != parameters[name].shape:
                raise ValueError(f"mask of {name!r} has shape {tuple(mask.shape)}, the "
                                 f"parameter {tuple(parameters[name].shape)}")
            self.masks[name] = mask.to(parameters[name].device)
        self._parameters = {name: parameters[name] for name in self.masks}

    @classmethod
    def from_sparsity(
        cls,
        model: nn.Module,
        sparsity: float | Mapping[str, float],
        granularity: str = "fine-grained",
    ) -> Pruner:
        """Magnitude masks at one ``granularity`` (see
        :data:`labkit.pruning.granularity.GRANULARITIES`).

        ``sparsity``: one number for every prunable layer (Conv2d and Linear), or a dict
        from layer name (``"backbone.conv1"``) to sparsity for the layers to prune.
        """
        layers = prunable_layers(model)
        if not isinstance(granularity, str):
            raise TypeError(f"granularity must be a str, got {type(granularity).__name__}")
        if isinstance(sparsity, Mapping):
            unknown = sorted(set(sparsity) - set(layers))
            if unknown:
                raise ValueError(f"sparsity names layers {unknown} that are not prunable "
                                 f"layers of the model; those are {sorted(layers)}")
            per_layer = dict(sparsity)
        else:
            per_layer = dict.fromkeys(layers, sparsity)
        masks = {f"{name}.weight": granularity_mask(layers[name].weight, ratio, granularity)
                 for name, ratio in per_layer.items()}
        return cls(model, masks)

    @torch.no_grad()
    def apply(self) -> None:
        """Set every masked-out entry to exactly zero."""
        for name, mask in self.masks.items():
            self._parameters[name].masked_fill_(~mask, 0.0)

    def __call__(self) -> None:
        """Same as :meth:`apply`, so the pruner is an ``after_step`` callback."""
        self.apply()

    def sparsity(self) -> dict[str, float]:
        """The fraction of zeros of every masked parameter, by name."""
        return {name: get_sparsity(self._parameters[name].detach()) for name in self.masks}

    def report(self) -> str:
        """A table of every masked parameter: shape, zeros, sparsity."""
        width = max(len(name) for name in self.masks) if self.masks else 4
        lines = [f"{'name':<{width}}  {'shape':<18} {'zeros':>8} {'sparsity':>8}"]
        for name, sparsity in self.sparsity().items():
            parameter = self._parameters[name]
            zeros = parameter.numel() - parameter.count_nonzero().item()
            lines.append(f"{name:<{width}}  {str(tuple(parameter.shape)):<18} {zeros:>8} "
                         f"{sparsity:>8.1%}")
        return "\n".join(lines)


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A pruned copy of ``model``: its masked-out weights set to zero; ``model`` untouched."""
    pruner = Pruner(copy.deepcopy(model), masks)
    pruner.apply()
    return pruner.model


def batchnorm_pairs(model: nn.Module) -> dict[str, str]:
    """Pair every BatchNorm with the layer whose output it normalises, read off the graph
    that ``torch.fx`` traces (not the order in which the modules were registered):
    ``{batchnorm name: layer name}``. The one pairing labkit has: network slimming masks
    a conv with its BatchNorm, channel removal cuts them together
    (:func:`labkit.pruning.channels.conv_blocks`).

    A BatchNorm pairs with a conv or linear layer when that layer's output is the
    BatchNorm's input, the layer has as many outputs as the BatchNorm has features and
    nothing else reads the layer's output; anything else raises ``ValueError``.
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # any tracing failure: say what could not be paired
        raise ValueError(
            f"BatchNorms are paired with their convs by tracing the model with torch.fx, "
            f"which failed for {type(model).__name__}: {error}") from error
    modules = dict(model.named_modules())
    pairs: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], BATCHNORM_TYPES):
            continue
        bn = modules[node.target]
        if node.target in pairs:
            raise ValueError(f"BatchNorm {node.target!r} runs more than once in a forward "
                             "pass: its channels cannot be pruned for one conv")
        source = node.args[0]
        layer = modules.get(source.target) if source.op == "call_module" else None
        if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            raise ValueError(f"BatchNorm {node.target!r} normalises the output of {source.name!r}"
                             ", not of a conv or linear layer: it cannot be paired")
        if layer.weight.shape[0] != bn.num_features or len(source.users) != 1:
            raise ValueError(
                f"BatchNorm {node.target!r} ({bn.num_features} features) cannot be paired with "
                f"{source.target!r} ({layer.weight.shape[0]} outputs, read by "
                f"{len(source.users)} nodes): pairing needs equal widths and one reader")
        pairs[node.target] = source.target
    unpaired = sorted(name for name, m in modules.items()
                      if isinstance(m, BATCHNORM_TYPES) and name not in pairs)
    if unpaired:
        raise ValueError(f"BatchNorms {unpaired} do not run in the forward pass: cannot pair")
    return pairs


def slimming_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Network slimming's channel masks: prune the channels of smallest ``|gamma|``.

    One global ranking over the BatchNorm scales of every layer (Liu et al. 2017):
    ``round(total_channels * sparsity)`` channels are pruned, wherever they are. A
    pruned channel loses its conv filter and its BatchNorm ``gamma`` and ``beta``, so
    its output is exactly zero. Masks are keyed by parameter name. Each BatchNorm is
    paired with the conv whose output it normalises in the traced graph (``torch.fx``).
    """
    check_module(model)
    check_sparsity(sparsity)
    conv_of = batchnorm_pairs(model)
    gammas = scaling_factors(model)
    keep = mask_from_scores(torch.cat(list(gammas.values())), sparsity)
    masks, start = {}, 0
    for bn_name, gamma in gammas.items():
        channels = keep[start:start + gamma.numel()]
        start += gamma.numel()
        conv_weight = model.get_submodule(conv_of[bn_name]).weight
        rows = channels.reshape(-1, *([1] * (conv_weight.dim() - 1))).expand(conv_weight.shape)
        masks[f"{conv_of[bn_name]}.weight"] = rows.contiguous()
        masks[f"{bn_name}.weight"] = channels.clone()
        masks[f"{bn_name}.bias"] = channels.clone()
    return masks


def accuracy_by_sparsity(model: nn.Module, scores: Mapping[str, Mapping[str, torch.Tensor]],
                         sparsities: Sequence[float], loader: DataLoader) -> pd.DataFrame:
    """Accuracy of ``model`` pruned by each criterion at each sparsity, without finetuning.

    ``scores[criterion]`` maps parameter names to importance scores of the parameter's
    shape; at sparsity ``s`` each of them keeps its largest scores,
    ``mask_from_scores(score, s)`` (the same sparsity in every layer), on a copy of
    ``model`` (:func:`apply_masks`). A row per criterion (index ``criterion``), a column
    per sparsity, the accuracy (%) on ``loader``.
    """
    import pandas as pd

    check_sparsities(sparsities)
    rows = {criterion: {sparsity: evaluate(apply_masks(model, {
                name: mask_from_scores(score, sparsity) for name, score in by_name.items()}),
                loader) for sparsity in sparsities}
            for criterion, by_name in scores.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("criterion")


def slimming_accuracy(models: Mapping[str, nn.Module], sparsities: Sequence[float],
                      loader: DataLoader) -> pd.DataFrame:
    """Accuracy of each of ``models`` with a fraction ``s`` of its channels pruned by
    :func:`slimming_masks` (smallest ``|gamma|`` over all layers), without finetuning:
    a row per model (index ``model``), a column per sparsity, the accuracy (%) on
    ``loader``."""
    import pandas as pd

    check_sparsities(sparsities)
    rows = {label: {sparsity: evaluate(apply_masks(model, slimming_masks(model, sparsity)),
                                       loader) for sparsity in sparsities}
            for label, model in models.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")
