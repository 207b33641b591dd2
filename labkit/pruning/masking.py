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
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from labkit.measure import get_sparsity, prunable_layers
from labkit.pruning.criteria import BATCHNORM_TYPES, scaling_factors
from labkit.pruning.granularity import granularity_mask, mask_from_scores


class Pruner:
    """Zero the masked-out weights of ``model``, now and after every optimizer step.

    ``masks`` maps parameter names to boolean keep-masks of the parameter's shape. The
    pruner acts **in place** on the model it is given (that is its job during
    finetuning); :func:`apply_masks` returns a pruned copy instead.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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


def _conv_of_each_batchnorm(model: nn.Module) -> dict[str, str]:
    """Pair every BatchNorm with the Conv2d or Linear just before it (by module order)."""
    pairs, previous = {}, None
    for name, module in model.named_modules():
        if isinstance(module, BATCHNORM_TYPES):
            width = None if previous is None else previous[1].weight.shape[0]
            if width != module.num_features:
                raise ValueError(f"BatchNorm {name!r} ({module.num_features} features) does "
                                 f"not follow a conv or linear layer of that many outputs")
            pairs[name] = previous[0]
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            previous = (name, module)
    return pairs


def slimming_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Network slimming's channel masks: prune the channels of smallest ``|gamma|``.

    One global ranking over the BatchNorm scales of every layer (Liu et al. 2017):
    ``round(total_channels * sparsity)`` channels are pruned, wherever they are. A
    pruned channel loses its conv filter and its BatchNorm ``gamma`` and ``beta``, so
    its output is exactly zero. Masks are keyed by parameter name.
    """
    conv_of = _conv_of_each_batchnorm(model)
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
