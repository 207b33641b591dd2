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
over the additions, so that one code path serves VGG (one group per conv), ResNet,
MobileNetV2 (a depthwise conv's output channels are its input channels) and DenseNet (after
a concatenation, a layer reads each earlier conv's channels from an offset), and a graph
it cannot follow (a broadcasting addition, a reshape of channels into features, ...) is
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
import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from labkit.models import VGG
from labkit.pruning.criteria import row_norm
from labkit.pruning.masking import batchnorm_pairs
from labkit.validation import check_count, check_sparsity

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
CONCATENATIONS = (torch.cat, torch.concat, torch.concatenate)
SIZES = ("size", "dim")
METADATA = ("shape", "dtype", "device", "ndim")
"""Attributes of a tensor that describe it and carry none of its channels."""
RESHAPES = ("view", "reshape", torch.reshape)
POOLING_FUNCTIONS = (F.avg_pool2d, F.max_pool2d)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be removed together, with every module they touch.

    ``convs``: the convs whose output channels these are (several when their outputs
    meet in additions); ``batchnorms``: the BatchNorms that normalise them;
    ``readers``: the convs and linear layers that read them as input channels or
    features; ``depthwise``: the depthwise convs (``groups == in_channels ==
    out_channels``) that filter each of them alone, so that their output channels are
    these channels too. Names are qualified module names (``model.get_submodule(name)``),
    in the order the forward pass runs them; ``channels`` is the group's width.

    ``offsets``: ``(name, first)`` for each BatchNorm, depthwise conv or reader that sees
    these channels inside a concatenation, starting at its channel ``first`` (absent: 0).
    ``blocks``: a grouped conv (``groups = g``) that makes or reads these channels splits
    them into ``g`` equal blocks that must stay equal, so the kept channels sit at the same
    positions in each of ``blocks`` blocks (the least common multiple of those ``g``).
    """

    convs: tuple[str, ...]
    batchnorms: tuple[str, ...]
    readers: tuple[str, ...]
    channels: int
    depthwise: tuple[str, ...] = ()
    offsets: tuple[tuple[str, int], ...] = ()
    blocks: int = 1

    def offset(self, name: str) -> int:
        """The first channel at which module ``name`` sees this group's channels."""
        return dict(self.offsets).get(name, 0)


def get_num_channels_to_keep(channels: int, prune_ratio: float) -> int:
    """Channels kept when pruning a fraction ``prune_ratio`` of ``channels``.

    ``round((1 - prune_ratio) * channels)``, and at least one, so that a layer never
    vanishes.
    """
    channels = check_count(channels, "channels")
    check_sparsity(prune_ratio, "prune_ratio")
    return max(1, round((1 - float(prune_ratio)) * channels))


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
    """What a traced value carries: ``sets``, the channel sets laid side by side along dim 1
    (one for a conv's output, several after a concatenation; None: features no conv made,
    e.g. a linear layer's output), on ``ndim`` dimensions, ``pooled`` when the spatial dims
    are 1 x 1."""

    sets: tuple[int, ...] | None
    ndim: int | None = 4
    pooled: bool = False


INPUT = 0
"""The channel set of the model's input: read by the first conv, never removed."""

FEATURES = _Flow(None, ndim=None)


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


class _LeafTracer(fx.Tracer):
    """``torch.fx``'s tracer, with every ``Conv2d``, ``Linear`` and ``BatchNorm2d``, subclasses
    included, kept as one module call rather than traced through: a subclass with its own
    ``forward`` is still the layer whose channels are removed."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) or \
            super().is_leaf_module(module, qualified_name)


def _traces(model: nn.Module) -> list[fx.Graph]:
    """The graphs of ``model`` in eval mode and in train mode (a layer used only in one
    mode, such as an auxiliary head in training, is in one of them); every module's mode is
    restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    graphs = []
    try:
        for training in (False, True):
            model.train(training)
            graphs.append(_LeafTracer().trace(model))
    except Exception as error:  # any tracing failure: say what could not be grouped
        raise ValueError(
            f"channel groups come from tracing the model with torch.fx, which failed "
            f"for {type(model).__name__}: {error}") from error
    finally:
        for module, training in modes.items():
            module.training = training
    return graphs


class _Grouper:
    """One pass over each traced graph: which channel sets every value carries, which
    modules make, normalise and read each set, and which sets additions join."""

    def __init__(self, model: nn.Module) -> None:
        self.graphs = _traces(model)
        self.modules = dict(model.named_modules())
        self.sets = _UnionFind()
        self.sets.new()
        self.widths: dict[int, int | None] = {INPUT: None}
        self.blocks: dict[int, int] = {}
        self.role: dict[str, dict[str, tuple[int, ...]]] = {
            "convs": {}, "batchnorms": {}, "depthwise": {}, "readers": {}}
        self.flows: dict[fx.Node, _Flow] = {}

    def groups(self) -> list[ChannelGroup]:
        for graph in self.graphs:
            for node in graph.nodes:
                self.flows[node] = self.visit(node)
        members, offsets = self.members()
        blocks: dict[int, int] = {}
        for channels, count in self.blocks.items():
            root = self.sets.find(channels)
            blocks[root] = math.lcm(blocks.get(root, 1), count)
        return [ChannelGroup(convs=tuple(found["convs"]), batchnorms=tuple(found["batchnorms"]),
                             readers=tuple(found["readers"]), channels=self.widths[root],
                             depthwise=tuple(found["depthwise"]),
                             offsets=tuple(offsets.get(root, ())), blocks=blocks.get(root, 1))
                for root, found in sorted(members.items()) if root != INPUT]

    def members(self) -> tuple[dict[int, dict[str, list[str]]], dict[int, list[tuple[str, int]]]]:
        """For each joined channel set: the modules in each role, and the offsets at which
        modules that read a concatenation see it."""
        members: dict[int, dict[str, list[str]]] = {}
        offsets: dict[int, list[tuple[str, int]]] = {}
        for role, assigned in self.role.items():
            for name, sets in assigned.items():
                first = 0
                for channels in sets:
                    root = self.sets.find(channels)
                    names = members.setdefault(root, {r: [] for r in self.role})[role]
                    if name in names:
                        raise ValueError(f"channel groups cannot follow {name!r}: it sees the "
                                         "same channels at two places of its input")
                    names.append(name)
                    if first:
                        offsets.setdefault(root, []).append((name, first))
                    first += self.widths[channels]
        return members, offsets

    def new_set(self, width: int, blocks: int = 1) -> int:
        channels = self.sets.new()
        self.widths[channels] = width
        if blocks > 1:
            self.blocks[channels] = blocks
        return channels

    def join(self, node: fx.Node, first: int, second: int) -> int:
        """Union of two channel sets, which must be equally wide."""
        if self.widths[first] != self.widths[second]:
            raise self.refuse(node, f"it joins {self.widths[first]} channels with "
                              f"{self.widths[second]} channels, which broadcasting would "
                              "repeat; removal cannot follow a broadcast")
        joined = self.sets.union(first, second)
        self.widths[joined] = self.widths[first]
        return joined

    def assign(self, node: fx.Node, role: str, sets: tuple[int, ...]) -> None:
        """Record that module ``node.target`` plays ``role`` for ``sets``; a module run twice
        (shared weights, or in both traces) joins the channel sets of both calls."""
        previous = self.role[role].get(node.target)
        if previous is not None:
            if len(previous) != len(sets):
                raise self.refuse(node, "the module runs twice on differently concatenated "
                                  "channels")
            sets = tuple(self.join(node, a, b) for a, b in zip(previous, sets, strict=True))
        self.role[role][node.target] = sets

    def refuse(self, node: fx.Node, why: str) -> ValueError:
        return ValueError(f"channel groups cannot follow node {node.name!r} "
                          f"({node.op} {_target_name(node.target)}): {why}")

    def inputs(self, node: fx.Node) -> list[_Flow]:
        return [self.flows[arg] for arg in node.all_input_nodes]

    def tracked(self, node: fx.Node) -> bool:
        """Whether a conv's channels flow into ``node``."""
        return any(_carries_conv_channels(flow) for flow in self.inputs(node))

    def visit(self, node: fx.Node) -> _Flow:
        if node.op == "placeholder":
            return _Flow((INPUT,), ndim=None)
        if node.op == "output":
            if self.tracked(node):
                raise self.refuse(node, "the model returns conv channels, which removal "
                                  "would change; end the model in a linear layer")
            return FEATURES
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        return self.visit_operation(node)

    def visit_module(self, node: fx.Node, module: nn.Module) -> _Flow:
        source = self.flows[node.args[0]] if node.args else FEATURES
        if isinstance(module, nn.Conv2d):
            return self.conv(node, module, source)
        if isinstance(module, nn.BatchNorm2d):
            if _carries_conv_channels(source):
                self.assign(node, "batchnorms", source.sets)
            return source
        if isinstance(module, nn.Linear):
            if _carries_conv_channels(source):
                if source.ndim != 2:
                    raise self.refuse(node, "a linear layer reads conv channels that are not "
                                      "pooled to one value each (N x C)")
                self.assign(node, "readers", source.sets)
            return FEATURES
        if not self.tracked(node):
            return FEATURES
        if isinstance(module, PASS_THROUGH_MODULES):
            return source
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return _Flow(source.sets, 4, _is_one(module.output_size) or source.pooled)
        if isinstance(module, nn.Flatten) and module.start_dim == 1:
            return self.flatten(node, source)
        return self.unknown(node)

    def conv(self, node: fx.Node, conv: nn.Conv2d, source: _Flow) -> _Flow:
        """A depthwise conv passes its input's channel sets on (each output channel filters
        its own input channel); any other conv reads them and makes a new set, in ``groups``
        blocks that must stay equal."""
        tracked = _carries_conv_channels(source)
        if _is_depthwise(conv):
            if tracked:
                self.assign(node, "depthwise", source.sets)
            return source
        if tracked:
            if conv.groups > 1:
                if len(source.sets) > 1:
                    raise self.refuse(node, f"a grouped conv (groups={conv.groups}) reads "
                                      "concatenated channels, whose blocks removal cannot "
                                      "keep equal")
                self.blocks[source.sets[0]] = math.lcm(self.blocks.get(source.sets[0], 1),
                                                       conv.groups)
            self.assign(node, "readers", source.sets)
        made = self.new_set(conv.out_channels, conv.groups)
        self.assign(node, "convs", (made,))
        return _Flow(self.role["convs"][node.target])

    def visit_operation(self, node: fx.Node) -> _Flow:
        target = node.target
        if target in ADDITIONS or target in ADDITION_METHODS:
            return self.addition(node)
        if target in CONCATENATIONS:
            return self.concatenation(node)
        if not self.tracked(node):
            return FEATURES
        source = self.inputs(node)[0]
        if target in POOLING_FUNCTIONS and _pools_its_whole_input(node):
            return _Flow(source.sets, 4, True)
        if target in PASS_THROUGH_FUNCTIONS or target in PASS_THROUGH_METHODS:
            return source
        if target in SIZES or (target is getattr and node.args[1] in METADATA):
            return FEATURES
        if target is F.adaptive_avg_pool2d:
            size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
            return _Flow(source.sets, 4, _is_one(size) or source.pooled)
        if target in (torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start == 1:
                return self.flatten(node, source)
        if target in RESHAPES and _is_batch_by_features(node):
            return self.flatten(node, source)
        if target in SPATIAL_MEANS or target in SPATIAL_MEAN_METHODS:
            return self.spatial_mean(node, source)
        return self.unknown(node)

    def addition(self, node: fx.Node) -> _Flow:
        flows = self.inputs(node)
        if not self.tracked(node):
            return FEATURES
        if not all(_carries_conv_channels(flow) and INPUT not in flow.sets for flow in flows):
            raise self.refuse(node, "it adds conv channels to values that are not conv "
                              "channels (the model's input, features)")
        widths = [[self.widths[s] for s in flow.sets] for flow in flows]
        if any(sum(w) != sum(widths[0]) for w in widths):
            raise self.refuse(node, f"a broadcasting addition of tensors of "
                              f"{' and '.join(str(sum(w)) for w in widths)} channels repeats "
                              "the narrower one over the wider; removal cannot follow it")
        if any(w != widths[0] for w in widths):
            raise self.refuse(node, "it adds channels concatenated from differently wide "
                              f"parts ({widths}), which ties parts of channel sets together")
        joined = flows[0].sets
        for flow in flows[1:]:
            joined = tuple(self.join(node, a, b) for a, b in zip(joined, flow.sets, strict=True))
        return _Flow(joined, flows[0].ndim, all(flow.pooled for flow in flows))

    def concatenation(self, node: fx.Node) -> _Flow:
        """``torch.cat`` along the channels lays the operands' channel sets side by side: the
        readers of the result read each set from its offset on."""
        if not self.tracked(node):
            return FEATURES
        tensors = node.args[0] if node.args else node.kwargs["tensors"]
        flows = [self.flows[tensor] for tensor in tensors]
        if not all(_carries_conv_channels(flow) and INPUT not in flow.sets for flow in flows):
            raise self.refuse(node, "it concatenates conv channels with values that are not "
                              "conv channels (the model's input, features), whose width the "
                              "graph does not say")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        ndims = {flow.ndim for flow in flows}
        if len(ndims) != 1 or dim % ndims.pop() != 1:
            raise self.refuse(node, f"a concatenation along dim {dim}; removal follows "
                              "concatenations along the channels (dim 1) only")
        sets = tuple(s for flow in flows for s in flow.sets)
        if len({self.sets.find(s) for s in sets}) != len(sets):
            raise self.refuse(node, "it concatenates the same channels more than once")
        return _Flow(sets, flows[0].ndim, all(flow.pooled for flow in flows))

    def flatten(self, node: fx.Node, source: _Flow) -> _Flow:
        if not source.pooled:
            raise self.refuse(node, "flattening conv channels with their spatial positions "
                              "mixes channels into features; pool to 1 x 1 first")
        return _Flow(source.sets, 2, True)

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
        return _Flow(source.sets, ndim if keepdim else 2, True)

    def unknown(self, node: fx.Node) -> _Flow:
        raise self.refuse(node, "channel groups follow convs (grouped and depthwise too), "
                          "BatchNorm2d, linear layers, element-wise activations, pooling, "
                          "additions, concatenations along the channels, spatial means and "
                          "flattening after global pooling; this operation mixes or reshapes "
                          "channels in a way removal cannot follow")


def _carries_conv_channels(flow: _Flow) -> bool:
    return flow.sets is not None and any(channels != INPUT for channels in flow.sets)


def _is_batch_by_features(node: fx.Node) -> bool:
    """Whether a ``view``/``reshape`` asks for ``(N, -1)``: after global pooling, the flatten
    head of CIFAR ResNets, ``x.view(x.size(0), -1)``. (A fixed feature count, ``(-1, C)``,
    would be wrong once channels are removed.)"""
    shape = node.args[1:] if isinstance(node.target, str) else node.args[1:2]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return len(shape) == 2 and isinstance(shape[1], int) and shape[1] == -1


def _pools_its_whole_input(node: fx.Node) -> bool:
    """Whether a pooling's kernel is its input's own spatial size, as in the CIFAR ResNets'
    ``F.avg_pool2d(x, x.size()[3])``: a global pooling."""
    kernel = node.args[1] if len(node.args) > 1 else node.kwargs.get("kernel_size")
    if isinstance(kernel, fx.Node) and kernel.target is operator.getitem:
        kernel = kernel.args[0]
    if not isinstance(kernel, fx.Node):
        return False
    measured = kernel.args[0] if kernel.args else None
    return measured is node.args[0] and (
        kernel.target in SIZES or (kernel.target is getattr and kernel.args[1] == "shape"))


def _target_name(target: object) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def _is_one(size: object) -> bool:
    return size == 1 or (isinstance(size, Sequence) and all(s == 1 for s in size))


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The channel groups of ``model``, found from its ``torch.fx`` graphs in eval and in
    train mode (the dependency groups of DepGraph, Fang et al. 2023).

    Every ``Conv2d`` makes a new channel set; BatchNorms, depthwise convs, element-wise
    activations, pooling and dropout pass their input's sets on; an addition joins the sets
    of its operands (union-find); a concatenation along the channels lays its operands'
    sets side by side, so that a layer reading it reads each set from an offset; a conv
    or linear layer reading a set is one of its readers, a grouped conv (``groups = g``)
    asks that the set's ``g`` blocks stay equal. Each joined set of conv channels is one
    :class:`ChannelGroup`, in the order of its first conv. A VGG has one group per conv; in
    a ResNet the stem and the last conv of every block of a stage (and the stage's
    projection shortcut) form one group; in a MobileNetV2 block the expansion conv, the
    depthwise conv and their BatchNorms form one group.

    Raises ``ValueError`` naming the node for what it cannot follow: a reshape or flatten
    of unpooled channels, a broadcasting addition, a grouped conv on concatenated channels,
    conv channels added to or concatenated with the model's input, or returned as the
    model's output.
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
        if not _same_in_every_block(index, group):
            size = group.channels // group.blocks
            raise ValueError(
                f"keep for {name!r} must keep the same positions, in the same order, in each "
                f"of its {group.blocks} blocks of {size} channels (a grouped conv makes or "
                f"reads them), e.g. [p, ..., p + {size}, ...], got {index.tolist()}")
        checked.append(index)
    return checked


def _same_in_every_block(index: torch.Tensor, group: ChannelGroup) -> bool:
    """Whether ``index`` is one list of positions repeated in each of the group's blocks."""
    if index.numel() % group.blocks:
        return False
    size = group.channels // group.blocks
    per_block = index.reshape(group.blocks, -1)
    expected = per_block[0] % size + size * torch.arange(group.blocks)[:, None]
    return bool(torch.equal(per_block, expected))


def _in_blocks(positions: torch.Tensor, group: ChannelGroup) -> torch.Tensor:
    """``positions`` (within one block) repeated in each of the group's blocks."""
    size = group.channels // group.blocks
    return (positions[None, :] + size * torch.arange(group.blocks)[:, None]).flatten()


@dataclass(frozen=True)
class _Piece:
    """Kept indices ``index`` of the ``width`` channels starting at ``offset``."""

    offset: int
    width: int
    index: torch.Tensor


def _pieces(model: nn.Module, groups: list[ChannelGroup],
            keep: list[torch.Tensor]) -> dict[tuple[str, int], list[_Piece]]:
    """For every (module, dim) the removal touches, the kept indices of each group it sees:
    dim 0 of the convs, BatchNorms and depthwise convs, dim 1 of the readers."""
    pieces: dict[tuple[str, int], list[_Piece]] = {}
    for group, index in zip(groups, keep, strict=True):
        for name in (*group.convs, *group.batchnorms, *group.depthwise):
            piece = _Piece(group.offset(name), group.channels, index)
            pieces.setdefault((name, 0), []).append(piece)
        for name in group.readers:
            groups_of_reader = getattr(model.get_submodule(name), "groups", 1)
            if groups_of_reader > 1:  # a grouped conv's weight holds one block of inputs
                per_block = index.numel() // groups_of_reader
                piece = _Piece(0, group.channels // groups_of_reader, index[:per_block])
            else:
                piece = _Piece(group.offset(name), group.channels, index)
            pieces.setdefault((name, 1), []).append(piece)
    return pieces


def _kept(size: int, pieces: list[_Piece]) -> torch.Tensor:
    """The kept indices of a dim of ``size`` entries: each piece's, shifted to its offset,
    and every entry no piece covers."""
    parts, position = [], 0
    for piece in sorted(pieces, key=lambda piece: piece.offset):
        parts += [torch.arange(position, piece.offset), piece.offset + piece.index]
        position = piece.offset + piece.width
    parts.append(torch.arange(position, size))
    return torch.cat(parts)


TENSORS_BY_DIM = {0: ("weight", "bias", "running_mean", "running_var"), 1: ("weight",)}


def _remove(model: nn.Module, groups: list[ChannelGroup],
            keep: Sequence[ChannelIndices]) -> nn.Module:
    """A copy of ``model`` whose tensors are cut to the kept channels: each cut tensor goes
    into ``copy.deepcopy``'s memo, so the copy never duplicates a tensor it then cuts."""
    keep = _check_keep(keep, groups)
    cut: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for (name, dim), pieces in _pieces(model, groups, keep).items():
        module = model.get_submodule(name)
        size = module.num_features if isinstance(module, nn.BatchNorm2d) \
            else module.weight.shape[dim]
        index = _kept(size, pieces)
        for tensor_name in TENSORS_BY_DIM[dim]:
            old = getattr(module, tensor_name, None)
            if old is None or old.dim() == 0:
                continue
            new = cut[id(old)][1] if id(old) in cut else old.detach()
            cut[id(old)] = (old, new.index_select(dim, index.to(new.device)))
    memo = {key: nn.Parameter(new, requires_grad=old.requires_grad)
            if isinstance(old, nn.Parameter) else new for key, (old, new) in cut.items()}
    pruned = copy.deepcopy(model, memo)
    for group in groups:
        for name in (*group.convs, *group.batchnorms, *group.depthwise, *group.readers):
            _match_attributes(pruned.get_submodule(name))
    return pruned


def _match_attributes(module: nn.Module) -> None:
    """Set a cut module's channel counts from its tensors' new shapes."""
    if isinstance(module, nn.BatchNorm2d):
        statistics = module.running_mean if module.running_mean is not None else module.weight
        if statistics is not None:
            module.num_features = len(statistics)
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif _is_depthwise(module):
        module.in_channels = module.out_channels = module.groups = len(module.weight)
    else:
        module.out_channels = len(module.weight)
        module.in_channels = module.weight.shape[1] * module.groups


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
    """One ratio per group: ``prune_ratio`` repeated when it is a number, else its entries
    (a list, a tuple, a NumPy vector)."""
    if isinstance(prune_ratio, numbers.Real) or not isinstance(prune_ratio, Iterable) \
            or isinstance(prune_ratio, str):
        ratios = [prune_ratio] * count
    else:
        ratios = list(prune_ratio)
        if len(ratios) != count:
            raise ValueError(
                f"prune_ratio must list one ratio for each of the {count} channel groups, "
                f"got {len(ratios)}: {ratios!r}"
            )
    for ratio in ratios:
        check_sparsity(ratio, "prune_ratio")
    return ratios


def channel_prune(model: nn.Module, prune_ratio: float | Sequence[float]) -> nn.Module:
    """A new model keeping the first ``get_num_channels_to_keep(c_g, r_g)`` channels of each
    channel group ``g`` (:func:`channel_groups`; for a VGG, each conv).

    ``prune_ratio``: one ratio in [0, 1) for every group, or a list with one per group.
    Sort the channels first (:func:`apply_channel_sorting`) so that the first ones
    are the important ones. A group in ``b`` blocks (``ChannelGroup.blocks``) keeps the
    first ``max(1, round(k / b))`` channels of each block.
    """
    groups = channel_groups(model)
    ratios = _ratios(prune_ratio, len(groups))
    keep = []
    for group, ratio in zip(groups, ratios, strict=True):
        kept = get_num_channels_to_keep(group.channels, ratio)
        keep.append(_in_blocks(torch.arange(max(1, round(kept / group.blocks))), group))
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


def _input_importance(reader: nn.Module) -> torch.Tensor:
    """:func:`get_input_channel_importance` of a reader over all its input channels; for a
    grouped conv, input channel ``c`` of block ``b`` is read by that block's outputs only."""
    weight = reader.weight.detach()
    groups = getattr(reader, "groups", 1)
    if groups == 1:
        return get_input_channel_importance(weight)
    blocks = weight.reshape(groups, -1, *weight.shape[1:]).transpose(1, 2)
    return torch.linalg.vector_norm(blocks.flatten(2), dim=2).flatten()


def group_importance(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Importance of each channel of ``group``: the L2 norm of every weight, in every reader,
    that reads it (:func:`reader_importance`), a reader of a concatenation counting from
    the group's offset. Zero for channels nothing reads."""
    if not group.readers:
        return torch.zeros(group.channels)
    per_reader = []
    for name in group.readers:
        first = group.offset(name)
        importance = _input_importance(model.get_submodule(name))
        per_reader.append(importance[first:first + group.channels])
    return torch.linalg.vector_norm(torch.stack(per_reader), dim=0).float()


def apply_channel_sorting(model: nn.Module) -> nn.Module:
    """A new model, same function, with each channel group sorted by importance.

    Channel ``j`` of a group is ranked by :func:`group_importance`: for a VGG's conv
    ``i``, :func:`get_input_channel_importance` of the next layer's weight (``conv_{i+1}``,
    or the linear head after the last conv). Most important first. A group in ``b``
    blocks is sorted the same way in every block, by the importance summed over blocks.
    Permuting the group's convs, BatchNorms and readers together changes no output.
    """
    groups = channel_groups(model)
    order = []
    for group in groups:
        importance = group_importance(model, group).reshape(group.blocks, -1).sum(dim=0)
        order.append(_in_blocks(torch.argsort(importance, descending=True, stable=True), group))
    return _remove(model, groups, order)
