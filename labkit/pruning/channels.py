"""Channel pruning with real speed-up: physical removal of conv channels.

Removing output channel ``j`` of ``conv_i`` touches exactly three things in the lab's
VGG (:class:`labkit.models.VGG`): row ``j`` of ``conv_i``'s weight, entry ``j`` of
``bn_i`` (scale, shift, running statistics) and input channel ``j`` of the next layer,
``conv_{i+1}`` or, after the last conv, column ``j`` of the linear head. The result is
a *smaller dense* model: every conv does fewer multiply-accumulates with the same
kernels, so the saving needs no sparse kernel (the lecture's "just a smaller dense
matrix").

A conv keeping a fraction ``1 - r`` of its output channels and following a conv that
also kept ``1 - r`` costs ``(1 - r)^2`` of its MACs: pruning 30% of every layer's
channels leaves about ``0.7^2 = 0.49`` of the MACs.

Which channels to keep: :func:`channel_prune` keeps the *first* ``k`` channels of each
conv, so one first sorts channels by importance with :func:`apply_channel_sorting`
(the MIT 6.5940 lab's method): the importance of channel ``j`` of ``conv_i`` is the L2
norm of the weights that read it in the next layer,
``||W_{i+1}[:, j]||_2`` (:func:`get_input_channel_importance`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from labkit.models import VGG
from labkit.pruning.criteria import row_norm

SUPPORTED_BACKBONE_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)

ChannelIndices = torch.Tensor | Sequence[int]


def get_num_channels_to_keep(channels: int, prune_ratio: float) -> int:
    """Channels kept when pruning a fraction ``prune_ratio`` of ``channels``.

    ``round((1 - prune_ratio) * channels)``, and at least one, so that a layer never
    vanishes.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    _check_ratio("prune_ratio", prune_ratio)
    return max(1, round((1 - prune_ratio) * channels))


def _check_ratio(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def get_input_channel_importance(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each input channel of a layer's weight.

    For a conv weight ``(out, in, kh, kw)`` entry ``c`` is
    ``sqrt(sum_{o, u, v} W[o, c, u, v]^2)``; for a linear weight ``(out, in)`` it is
    the norm of column ``c``: the row norm (``labkit.pruning.criteria.row_norm``) of
    the weight with its first two dimensions swapped. Returns a tensor of shape ``(in,)``.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() not in (2, 4):
        raise ValueError(
            f"weight must be 2-d (linear) or 4-d (conv), got shape {tuple(weight.shape)}"
        )
    return row_norm(weight.transpose(0, 1), p=2)


def conv_blocks(model: nn.Module) -> list[tuple[str, str]]:
    """Names ``(conv_i, bn_i)`` inside ``model.backbone``, in order; checks the model.

    Channel removal supports :class:`labkit.models.VGG`: a backbone of ``Conv2d``
    (``groups=1``) each followed by its ``BatchNorm2d``, ``ReLU`` and ``MaxPool2d``,
    and a ``Linear`` head. Anything else raises ``TypeError``.
    """
    if not isinstance(model, VGG):
        raise TypeError(
            f"model must be a labkit.models.VGG, got {type(model).__name__}: channel removal "
            "knows the dependencies of VGG's conv -> BatchNorm -> next conv chain only"
        )
    modules = list(model.backbone.named_children())
    for name, module in modules:
        if not isinstance(module, SUPPORTED_BACKBONE_TYPES):
            raise TypeError(
                f"backbone layer {name!r} is a {type(module).__name__}; channel removal "
                f"supports {[t.__name__ for t in SUPPORTED_BACKBONE_TYPES]}"
            )
    if not isinstance(model.classifier, nn.Linear):
        raise TypeError(f"classifier must be nn.Linear, got {type(model.classifier).__name__}")
    blocks = []
    for position, (name, module) in enumerate(modules):
        if not isinstance(module, nn.Conv2d):
            continue
        if module.groups != 1:
            raise TypeError(f"conv {name!r} has groups={module.groups}; only groups=1 is supported")
        following = modules[position + 1] if position + 1 < len(modules) else None
        if following is None or not isinstance(following[1], nn.BatchNorm2d):
            raise TypeError(f"conv {name!r} must be followed by its BatchNorm2d")
        blocks.append((name, following[0]))
    return blocks


def _check_keep(keep: Sequence[ChannelIndices], blocks, model: VGG) -> list[torch.Tensor]:
    if len(keep) != len(blocks):
        raise ValueError(
            f"keep must list channel indices for each of the {len(blocks)} convs, "
            f"got {len(keep)} entries"
        )
    checked = []
    for (conv_name, _), indices in zip(blocks, keep, strict=True):
        channels = getattr(model.backbone, conv_name).out_channels
        index = torch.as_tensor(indices, dtype=torch.long).flatten()
        if index.numel() == 0:
            raise ValueError(f"keep for {conv_name!r} is empty; keep at least one channel")
        if index.min() < 0 or index.max() >= channels:
            raise ValueError(
                f"keep for {conv_name!r} must be indices in [0, {channels - 1}], "
                f"got {index.tolist()}"
            )
        if index.unique().numel() != index.numel():
            raise ValueError(f"keep for {conv_name!r} repeats a channel: {index.tolist()}")
        checked.append(index)
    return checked


def _sliced_conv(conv: nn.Conv2d, out_keep: torch.Tensor,
                 in_keep: torch.Tensor | None) -> nn.Conv2d:
    weight = conv.weight.detach()[out_keep.to(conv.weight.device)]
    if in_keep is not None:
        weight = weight[:, in_keep.to(weight.device)]
    new = nn.Conv2d(
        weight.shape[1], weight.shape[0], conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
        padding_mode=conv.padding_mode, device=weight.device, dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias[out_keep.to(conv.bias.device)])
    return new.train(conv.training)


def _sliced_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(
        keep.numel(), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    ).to(bn.weight if bn.affine else bn.running_mean)
    with torch.no_grad():
        for name, tensor in [*new.named_parameters(), *new.named_buffers()]:
            old = getattr(bn, name)
            tensor.copy_(old if old.dim() == 0 else old[keep.to(old.device)])
    return new.train(bn.training)


def _sliced_linear(linear: nn.Linear, in_keep: torch.Tensor) -> nn.Linear:
    weight = linear.weight.detach()[:, in_keep.to(linear.weight.device)]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new.train(linear.training)


def remove_channels(model: VGG, keep: Sequence[ChannelIndices]) -> VGG:
    """A new, smaller VGG keeping output channels ``keep[i]`` of ``conv_i``, in that order.

    ``keep`` has one entry per conv: the indices (any order, no repeats) of the
    channels to keep. ``conv_i``, ``bn_i`` and the input side of the next layer are
    rebuilt with the right ``out_channels`` / ``num_features`` / ``in_channels`` /
    ``in_features``; ``model`` itself is not changed. In eval mode the new model computes
    what ``model`` computes with the other channels' activations set to zero.
    """
    blocks = conv_blocks(model)
    keep = _check_keep(keep, blocks, model)
    pruned = copy.deepcopy(model)
    previous = None
    for (conv_name, bn_name), channels in zip(blocks, keep, strict=True):
        backbone = pruned.backbone
        setattr(backbone, conv_name, _sliced_conv(getattr(backbone, conv_name), channels,
                                                  previous))
        setattr(backbone, bn_name, _sliced_bn(getattr(backbone, bn_name), channels))
        previous = channels
    pruned.classifier = _sliced_linear(pruned.classifier, previous)
    widths = iter(channels.numel() for channels in keep)
    pruned.widths = tuple(w if isinstance(w, str) else next(widths) for w in model.widths)
    return pruned


def _ratios(prune_ratio: float | Sequence[float], count: int) -> list[float]:
    if isinstance(prune_ratio, Sequence):
        if len(prune_ratio) != count:
            raise ValueError(
                f"prune_ratio must list one ratio for each of the {count} convs, "
                f"got {len(prune_ratio)}: {list(prune_ratio)!r}"
            )
        ratios = list(prune_ratio)
    else:
        ratios = [prune_ratio] * count
    for ratio in ratios:
        _check_ratio("prune_ratio", ratio)
    return ratios


def channel_prune(model: VGG, prune_ratio: float | Sequence[float]) -> VGG:
    """A new VGG keeping the first ``get_num_channels_to_keep(c_i, r_i)`` channels of each conv.

    ``prune_ratio``: one ratio in [0, 1) for every conv, or a list with one per conv.
    Sort the channels first (:func:`apply_channel_sorting`) so that the first ones
    are the important ones.
    """
    blocks = conv_blocks(model)
    ratios = _ratios(prune_ratio, len(blocks))
    keep = [
        torch.arange(get_num_channels_to_keep(getattr(model.backbone, conv).out_channels, r))
        for (conv, _), r in zip(blocks, ratios, strict=True)
    ]
    return remove_channels(model, keep)


def apply_channel_sorting(model: VGG) -> VGG:
    """A new VGG, same function, with each conv's output channels sorted by importance.

    Channel ``j`` of ``conv_i`` is ranked by :func:`get_input_channel_importance` of
    the next layer's weight (``conv_{i+1}``, or the linear head after the last conv),
    most important first. Permuting ``conv_i``'s rows, ``bn_i``'s entries and the next
    layer's input channels together changes no output.
    """
    blocks = conv_blocks(model)
    next_layers = [getattr(model.backbone, conv) for conv, _ in blocks[1:]] + [model.classifier]
    order = [
        torch.argsort(get_input_channel_importance(layer.weight), descending=True, stable=True)
        for layer in next_layers
    ]
    return remove_channels(model, order)
