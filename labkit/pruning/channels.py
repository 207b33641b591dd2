"""Channel pruning with real speed-up: physical removal of conv channels.

Removing output channel ``j`` of a conv touches its weight row ``j`` and bias entry ``j``,
entry ``j`` of the BatchNorm that normalises it (scale, shift, running statistics) and input
channel ``j`` of every layer that reads it: the next conv or, after the last conv, column
``j`` of the linear head. The result is a *smaller dense* model: every conv does fewer
multiply-accumulates with the same kernels, so the saving needs no sparse kernel (the
lecture's "just a smaller dense matrix").

**Coupled channels.** In a ResNet (He et al. 2016) a block adds its input to its output,
``y = F(x) + x``: channel ``j`` of ``y`` is channel ``j`` of the conv ending ``F`` *and*
channel ``j`` of whatever produced ``x``. All convs whose outputs meet in an addition must
keep the same channels, and every layer reading any of them loses the same inputs: a
**channel group** (the dependency groups of Torch-Pruning's DepGraph, Fang et al. 2023).
:func:`channel_groups` finds them from the graph ``torch.fx`` traces, with a union-find
over the additions, so that one code path serves VGG (one group per conv) and ResNet, and
a graph it cannot follow (a concatenation, a reshape of channels into features, ...) is
refused with the name of the node.

A conv keeping a fraction ``1 - r`` of its output channels and following a conv that
also kept ``1 - r`` costs ``(1 - r)^2`` of its MACs: pruning 30% of every layer's
channels leaves about ``0.7^2 = 0.49`` of the MACs.

Which channels to keep: :func:`channel_prune` keeps the *first* ``k`` channels of each
group, so one first sorts channels by importance with :func:`apply_channel_sorting`
(the MIT 6.5940 lab's method): the importance of channel ``j`` is the L2 norm of the
weights that read it in the next layers, ``||W_{i+1}[:, j]||_2``
(:func:`get_input_channel_importance`), over every reader of the group.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from labkit.models import VGG
from labkit.pruning.criteria import row_norm
from labkit.pruning.masking import batchnorm_pairs

SUPPORTED_BACKBONE_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)

ChannelIndices = torch.Tensor | Sequence[int]

PASS_THROUGH_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish,
                        nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d)
"""Modules that act on each channel alone and keep the layout ``N x C x H x W``."""

PASS_THROUGH_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.max_pool2d,
                          F.avg_pool2d)
PASS_THROUGH_METHODS = ("relu", "relu_", "contiguous")
ADDITIONS = (operator.add, operator.iadd, torch.add)
ADDITION_METHODS = ("add", "add_")
SPATIAL_MEANS = (torch.mean, torch.amax)
SPATIAL_MEAN_METHODS = ("mean", "amax")


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be removed together, with every module they touch.

    ``convs``: the convs whose output channels these are (several when their outputs
    meet in additions); ``batchnorms``: the BatchNorms that normalise them;
    ``readers``: the convs and linear layers that read them as input channels or
    features. Names are qualified module names (``model.get_submodule(name)``), in the
    order the forward pass runs them; ``channels`` is the group's width.
    """

    convs: tuple[str, ...]
    batchnorms: tuple[str, ...]
    readers: tuple[str, ...]
    channels: int


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


class _UnionFind:
    """Disjoint sets of channel ids: ``union`` when two tensors' channels are the same."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return self.parent[-1]

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, first: int, second: int) -> int:
        first, second = self.find(first), self.find(second)
        self.parent[max(first, second)] = min(first, second)
        return min(first, second)


@dataclass(frozen=True)
class _Flow:
    """What a traced value carries: channel set ``channels`` (None: features no conv
    made, e.g. a linear layer's output), on ``ndim`` dimensions with channels on dim 1,
    ``pooled`` when the spatial dims are 1 x 1."""

    channels: int | None
    ndim: int | None = 4
    pooled: bool = False


INPUT = 0
"""The channel set of the model's input: read by the first conv, never removed."""


class _Grouper:
    """One pass over the traced graph: which channel set every value carries, which
    modules make, normalise and read each set, and which sets additions join."""

    def __init__(self, model: nn.Module) -> None:
        try:
            self.graph = fx.Tracer().trace(model)
        except Exception as error:  # any tracing failure: say what could not be grouped
            raise ValueError(
                f"channel groups come from tracing the model with torch.fx, which failed "
                f"for {type(model).__name__}: {error}") from error
        self.modules = dict(model.named_modules())
        self.sets = _UnionFind()
        self.sets.new()
        self.role: dict[str, dict[str, int]] = {"convs": {}, "batchnorms": {}, "readers": {}}
        self.flows: dict[fx.Node, _Flow] = {}

    def groups(self) -> list[ChannelGroup]:
        for node in self.graph.nodes:
            self.flows[node] = self.visit(node)
        members: dict[int, dict[str, list[str]]] = {}
        for role, assigned in self.role.items():
            for name, channels in assigned.items():
                root = self.sets.find(channels)
                members.setdefault(root, {r: [] for r in self.role})[role].append(name)
        groups = []
        for root in sorted(members):
            found = members[root]
            if root == INPUT:
                continue
            widths = {self.modules[conv].out_channels for conv in found["convs"]}
            groups.append(ChannelGroup(convs=tuple(found["convs"]),
                                       batchnorms=tuple(found["batchnorms"]),
                                       readers=tuple(found["readers"]),
                                       channels=widths.pop()))
        return groups

    def assign(self, role: str, name: str, channels: int) -> None:
        """Record that module ``name`` plays ``role`` for ``channels``; a module run twice
        (shared weights) joins the channel sets of both calls."""
        previous = self.role[role].get(name)
        self.role[role][name] = channels if previous is None else self.sets.union(previous,
                                                                                  channels)

    def refuse(self, node: fx.Node, why: str) -> ValueError:
        return ValueError(f"channel groups cannot follow node {node.name!r} "
                          f"({node.op} {_target_name(node.target)}): {why}")

    def inputs(self, node: fx.Node) -> list[_Flow]:
        return [self.flows[arg] for arg in node.all_input_nodes]

    def tracked(self, node: fx.Node) -> bool:
        """Whether a conv's channels flow into ``node``."""
        return any(flow.channels not in (None, INPUT) for flow in self.inputs(node))

    def visit(self, node: fx.Node) -> _Flow:
        if node.op == "placeholder":
            return _Flow(INPUT, ndim=None)
        if node.op == "output":
            if self.tracked(node):
                raise self.refuse(node, "the model returns conv channels, which removal "
                                  "would change; end the model in a linear layer")
            return _Flow(None, ndim=None)
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        return self.visit_operation(node)

    def visit_module(self, node: fx.Node, module: nn.Module) -> _Flow:
        source = self.flows[node.args[0]] if node.args else _Flow(None)
        if isinstance(module, nn.Conv2d):
            if module.groups != 1:
                if self.tracked(node):
                    raise self.refuse(node, f"a grouped conv (groups={module.groups}) ties its "
                                      "output channels to its input channels")
                return _Flow(None)
            if source.channels is not None:
                self.assign("readers", node.target, source.channels)
            channels = self.sets.new()
            self.assign("convs", node.target, channels)
            return _Flow(self.sets.find(self.role["convs"][node.target]))
        if isinstance(module, nn.BatchNorm2d):
            if source.channels is not None:
                self.assign("batchnorms", node.target, source.channels)
            return source
        if isinstance(module, nn.Linear):
            if source.channels not in (None, INPUT):
                if source.ndim != 2:
                    raise self.refuse(node, "a linear layer reads conv channels that are not "
                                      "pooled to one value each (N x C)")
                self.assign("readers", node.target, source.channels)
            return _Flow(None, ndim=None)
        if not self.tracked(node):
            return _Flow(None, ndim=None)
        if isinstance(module, PASS_THROUGH_MODULES):
            return source
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return _Flow(source.channels, 4, _is_one(module.output_size) or source.pooled)
        if isinstance(module, nn.Flatten) and module.start_dim == 1:
            return self.flatten(node, source)
        return self.unknown(node)

    def visit_operation(self, node: fx.Node) -> _Flow:
        target = node.target
        if target in ADDITIONS or target in ADDITION_METHODS:
            return self.addition(node)
        if not self.tracked(node):
            return _Flow(None, ndim=None)
        source = self.inputs(node)[0]
        if target in PASS_THROUGH_FUNCTIONS or target in PASS_THROUGH_METHODS:
            return source
        if target is F.adaptive_avg_pool2d:
            size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
            return _Flow(source.channels, 4, _is_one(size) or source.pooled)
        if target in (torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start == 1:
                return self.flatten(node, source)
        if target in SPATIAL_MEANS or target in SPATIAL_MEAN_METHODS:
            return self.spatial_mean(node, source)
        return self.unknown(node)

    def addition(self, node: fx.Node) -> _Flow:
        flows = self.inputs(node)
        if not self.tracked(node):
            return _Flow(None, ndim=None)
        if any(flow.channels in (None, INPUT) for flow in flows):
            raise self.refuse(node, "it adds conv channels to values that are not conv "
                              "channels (the model's input, features)")
        joined = flows[0].channels
        for flow in flows[1:]:
            joined = self.sets.union(joined, flow.channels)
        return _Flow(joined, flows[0].ndim, all(flow.pooled for flow in flows))

    def flatten(self, node: fx.Node, source: _Flow) -> _Flow:
        if not source.pooled:
            raise self.refuse(node, "flattening conv channels with their spatial positions "
                              "mixes channels into features; pool to 1 x 1 first")
        return _Flow(source.channels, 2, True)

    def spatial_mean(self, node: fx.Node, source: _Flow) -> _Flow:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        ndim = source.ndim or 4
        dims = {d % ndim for d in dims}
        if dims != set(range(2, ndim)):
            raise self.refuse(node, f"a reduction over dims {sorted(dims)} of conv channels; "
                              f"only the mean over all spatial dims {list(range(2, ndim))} "
                              "keeps channels apart")
        return _Flow(source.channels, ndim if keepdim else 2, True)

    def unknown(self, node: fx.Node) -> _Flow:
        raise self.refuse(node, "channel groups follow convs, BatchNorm2d, linear layers, "
                          "element-wise activations, pooling, additions and spatial means; "
                          "this operation mixes or reshapes channels in a way removal cannot "
                          "follow (a concatenation, a reshape, ...)")


def _target_name(target: object) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def _is_one(size: object) -> bool:
    return size == 1 or (isinstance(size, Sequence) and all(s == 1 for s in size))


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The channel groups of ``model``, found from its ``torch.fx`` graph.

    Every ``Conv2d`` (``groups=1``) makes a new channel set; BatchNorms, element-wise
    activations, pooling and dropout pass their input's set on; an addition joins the sets
    of its operands (union-find); a conv or linear layer reading a set is one of its
    readers. Each joined set of conv channels is one :class:`ChannelGroup`, in the order
    of its first conv. A VGG has one group per conv; in a ResNet the stem and the last
    conv of every block of a stage (and the stage's projection shortcut) form one group.

    Raises ``ValueError`` naming the node for what it cannot follow: a concatenation, a
    reshape or flatten of unpooled channels, a grouped conv on conv channels, conv channels
    added to the model's input or returned as the model's output.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    groups = _Grouper(model).groups()
    if not groups:
        raise ValueError(f"model ({type(model).__name__}) has no Conv2d whose output channels "
                         "could be removed")
    return groups


def conv_blocks(model: nn.Module) -> list[tuple[str, str]]:
    """Names ``(conv_i, bn_i)`` inside ``model.backbone``, in order; checks the model.

    Channel removal supports :class:`labkit.models.VGG`: a backbone of ``Conv2d``
    (``groups=1``) each followed by its ``BatchNorm2d``, ``ReLU`` and ``MaxPool2d``,
    and a ``Linear`` head. Anything else raises ``TypeError``. Each conv's BatchNorm is
    the one :func:`labkit.pruning.masking.batchnorm_pairs` pairs it with.
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
    batchnorm_of = {conv: bn for bn, conv in batchnorm_pairs(model).items()}
    blocks = []
    for name, module in modules:
        if not isinstance(module, nn.Conv2d):
            continue
        if module.groups != 1:
            raise TypeError(f"conv {name!r} has groups={module.groups}; only groups=1 is supported")
        if f"backbone.{name}" not in batchnorm_of:
            raise TypeError(f"conv {name!r} must be followed by its BatchNorm2d")
        blocks.append((name, batchnorm_of[f"backbone.{name}"].removeprefix("backbone.")))
    return blocks


def _check_keep(keep: Sequence[ChannelIndices], groups: list[ChannelGroup]) -> list[torch.Tensor]:
    if len(keep) != len(groups):
        raise ValueError(
            f"keep must list channel indices for each of the {len(groups)} channel groups "
            f"(channel_groups(model)), got {len(keep)} entries"
        )
    checked = []
    for group, indices in zip(groups, keep, strict=True):
        name = " + ".join(group.convs)
        index = torch.as_tensor(indices)
        if index.numel() == 0:
            raise ValueError(f"keep for {name!r} is empty; keep at least one channel")
        if index.is_floating_point() or index.dtype == torch.bool or index.is_complex():
            raise TypeError(f"keep for {name!r} must be integer channel indices, got dtype "
                            f"{index.dtype}")
        index = index.long().flatten()
        if index.min() < 0 or index.max() >= group.channels:
            raise ValueError(
                f"keep for {name!r} must be indices in [0, {group.channels - 1}], "
                f"got {index.tolist()}"
            )
        if index.unique().numel() != index.numel():
            raise ValueError(f"keep for {name!r} repeats a channel: {index.tolist()}")
        checked.append(index)
    return checked


def _cuts(groups: list[ChannelGroup], keep: list[torch.Tensor]) -> dict[tuple[str, str], list]:
    """For every (module, tensor) the removal touches, the ``(dim, kept indices)`` to cut."""
    cuts: dict[tuple[str, str], list] = {}
    for group, index in zip(groups, keep, strict=True):
        touched = [(name, tensor, 0) for name in group.convs for tensor in ("weight", "bias")]
        touched += [(name, tensor, 0) for name in group.batchnorms
                    for tensor in ("weight", "bias", "running_mean", "running_var")]
        touched += [(name, "weight", 1) for name in group.readers]
        for name, tensor, dim in touched:
            cuts.setdefault((name, tensor), []).append((dim, index))
    return cuts


def _remove(model: nn.Module, groups: list[ChannelGroup],
            keep: Sequence[ChannelIndices]) -> nn.Module:
    """A copy of ``model`` whose tensors are cut to the kept channels: each cut tensor goes
    into ``copy.deepcopy``'s memo, so the copy never duplicates a tensor it then cuts."""
    keep = _check_keep(keep, groups)
    memo: dict[int, torch.Tensor] = {}
    for (module_name, tensor_name), cuts in _cuts(groups, keep).items():
        old = getattr(model.get_submodule(module_name), tensor_name)
        if old is None or old.dim() == 0:
            continue
        new = old.detach()
        for dim, index in cuts:
            new = new.index_select(dim, index.to(new.device))
        memo[id(old)] = nn.Parameter(new, requires_grad=old.requires_grad) \
            if isinstance(old, nn.Parameter) else new
    pruned = copy.deepcopy(model, memo)
    for group, index in zip(groups, keep, strict=True):
        for name in group.convs:
            pruned.get_submodule(name).out_channels = index.numel()
        for name in group.batchnorms:
            pruned.get_submodule(name).num_features = index.numel()
        for name in group.readers:
            layer = pruned.get_submodule(name)
            if isinstance(layer, nn.Linear):
                layer.in_features = index.numel()
            else:
                layer.in_channels = index.numel()
    return pruned


def remove_channels(model: nn.Module, keep: Sequence[ChannelIndices]) -> nn.Module:
    """A new, smaller model keeping channels ``keep[g]`` of channel group ``g``, in that order.

    ``keep`` has one entry per group of :func:`channel_groups` (for a VGG, one per conv):
    the indices (any order, no repeats) of the channels to keep. Every conv of the group
    keeps those output channels, every BatchNorm those features, every reader those input
    channels, with ``out_channels`` / ``num_features`` / ``in_channels`` / ``in_features``
    updated; ``model`` itself is not changed. In eval mode the new model computes what
    ``model`` computes with the other channels' activations set to zero.
    """
    return _remove(model, channel_groups(model), keep)


def _ratios(prune_ratio: float | Sequence[float], count: int) -> list[float]:
    if isinstance(prune_ratio, Sequence):
        if len(prune_ratio) != count:
            raise ValueError(
                f"prune_ratio must list one ratio for each of the {count} channel groups, "
                f"got {len(prune_ratio)}: {list(prune_ratio)!r}"
            )
        ratios = list(prune_ratio)
    else:
        ratios = [prune_ratio] * count
    for ratio in ratios:
        _check_ratio("prune_ratio", ratio)
    return ratios


def channel_prune(model: nn.Module, prune_ratio: float | Sequence[float]) -> nn.Module:
    """A new model keeping the first ``get_num_channels_to_keep(c_g, r_g)`` channels of each
    channel group ``g`` (:func:`channel_groups`; for a VGG, each conv).

    ``prune_ratio``: one ratio in [0, 1) for every group, or a list with one per group.
    Sort the channels first (:func:`apply_channel_sorting`) so that the first ones
    are the important ones.
    """
    groups = channel_groups(model)
    ratios = _ratios(prune_ratio, len(groups))
    keep = [torch.arange(get_num_channels_to_keep(group.channels, ratio))
            for group, ratio in zip(groups, ratios, strict=True)]
    return _remove(model, groups, keep)


def reader_importance(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Importance of each input channel over several layers that read the same channels:
    ``sqrt(sum_r importance_r[j]^2)``, the L2 norm of every weight, in every reader ``r``,
    that reads channel ``j`` (:func:`get_input_channel_importance` of each conv or linear
    weight). For one weight, its input-channel importance. Returns float32 ``(in,)``.

    Raises ``ValueError`` for no weights or weights reading different numbers of channels.
    """
    if isinstance(weights, torch.Tensor) or not isinstance(weights, Sequence) or not weights:
        raise ValueError("weights must be a non-empty list of the readers' weight tensors, "
                         f"got {type(weights).__name__}")
    per_reader = [get_input_channel_importance(w) for w in weights]
    sizes = [importance.numel() for importance in per_reader]
    if len(set(sizes)) != 1:
        raise ValueError(f"weights must all read the same number of input channels (dim 1), "
                         f"got {sizes}")
    return torch.linalg.vector_norm(torch.stack(per_reader), dim=0).float()


def group_importance(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Importance of each channel of ``group``: :func:`reader_importance` of the weights of
    all the group's readers. Zero for channels nothing reads."""
    if not group.readers:
        return torch.zeros(group.channels)
    return reader_importance([model.get_submodule(name).weight.detach()
                              for name in group.readers])


def apply_channel_sorting(model: nn.Module) -> nn.Module:
    """A new model, same function, with each channel group sorted by importance.

    Channel ``j`` of a group is ranked by :func:`group_importance`: for a VGG's conv
    ``i``, :func:`get_input_channel_importance` of the next layer's weight (``conv_{i+1}``,
    or the linear head after the last conv). Most important first. Permuting the group's
    convs, BatchNorms and readers together changes no output.
    """
    groups = channel_groups(model)
    order = [torch.argsort(group_importance(model, group), descending=True, stable=True)
             for group in groups]
    return _remove(model, groups, order)
