"""Comparison 2: labkit's channel removal against Torch-Pruning (Fang et al. 2023).

labkit (:mod:`labkit.pruning.channels`): sort each channel group by the L2 norm of the
next layers' weights that read it (:func:`apply_channel_sorting`), then keep the first
``round((1 - r) * c)`` (:func:`channel_prune`). Both find the groups themselves, from a
traced graph: labkit with ``torch.fx`` (:func:`channel_groups`), Torch-Pruning with its
``DependencyGraph``.

Torch-Pruning: a ``DependencyGraph`` traced from the model finds the same chain by
itself; ``BasePruner`` (``MagnitudePruner`` in older releases) with
``GroupMagnitudeImportance(p=2)`` ranks each channel by the mean over its group (the
conv's filter, the BatchNorm scale, the next layer's input slice) of the squared L2
norms, and keeps ``int((1 - r) * c)`` channels: the floor, where labkit rounds.

So the two keep different channel counts at some ratios ("default" rows), and
different channels (another criterion). For the side-by-side rows Torch-Pruning is
asked, layer by layer, for exactly labkit's widths; then parameters and MACs must be
equal, and the latency of two models of identical shapes should be too. Finally labkit's
:func:`remove_channels` is given the channels Torch-Pruning kept: both models must then
compute the same outputs.

On the **CIFAR ResNet** the residual additions couple channels across blocks, and
Torch-Pruning's DepGraph is the oracle: both remove exactly the channels labkit's
criterion drops, group by group; outputs, parameters, MACs and the shapes of every
parameter must agree, and two models of identical shapes must run equally fast.
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from labkit.measure import count_macs, num_parameters
from labkit.models import VGG
from labkit.pruning.channels import (
    apply_channel_sorting,
    channel_groups,
    channel_prune,
    conv_blocks,
    get_input_channel_importance,
    get_num_channels_to_keep,
    group_importance,
    remove_channels,
)

from . import report
from .config import Config, cifar_inputs, cifar_model, cifar_resnet
from .timing import as_dicts, speedup, time_calls, time_models

NAME = "channels"
TITLE = "Channel pruning: labkit against Torch-Pruning"


def labkit_prune(model: VGG, ratio: float) -> VGG:
    """Sort channels by importance, keep the first ``round((1 - r) * c)`` of each conv."""
    return channel_prune(apply_channel_sorting(model), ratio)


def convs(model: VGG) -> list[torch.nn.Conv2d]:
    return [model.backbone.get_submodule(conv) for conv, _ in conv_blocks(model)]


def widths(model: nn.Module) -> list[int]:
    """The width of every channel group (for a VGG, of every conv)."""
    return [group.channels for group in channel_groups(model)]


def torch_pruning_prune(model: VGG, inputs: torch.Tensor, ratio: float,
                        keep: list[int] | None = None) -> tuple[VGG, list[list[int]]]:
    """Torch-Pruning's magnitude pruner on a copy of ``model``; returns it and the kept
    channel indices of each conv.

    ``keep=None``: the uniform ``ratio``, as a user would call it. Otherwise conv ``i``
    keeps ``keep[i]`` channels, through a per-layer ratio ``(c - k - 1/2) / c`` whose
    ``int((1 - ratio) * c)`` is exactly ``k``.
    """
    pruned = copy.deepcopy(model)
    layers = convs(pruned)
    original = [conv.out_channels for conv in layers]
    ratios = None if keep is None else {
        conv: (channels - kept - 0.5) / channels
        for conv, channels, kept in zip(layers, original, keep, strict=True)}
    pruner = tp.pruner.BasePruner(
        pruned, inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, pruning_ratio_dict=ratios, ignored_layers=[pruned.classifier])
    removed = {conv: [] for conv in layers}
    for group in pruner.step(interactive=True):
        removed[group[0].dep.target.module] = list(group[0].idxs)
        group.prune()
    kept = [sorted(set(range(channels)) - set(removed[conv]))
            for conv, channels in zip(layers, original, strict=True)]
    return pruned.eval(), kept


def size(model: nn.Module, inputs: torch.Tensor) -> dict:
    return {"widths": widths(model), "parameters": num_parameters(model),
            "macs": count_macs(model, inputs[:1])}


def kept_overlap(model: VGG, theirs: list[list[int]]) -> float:
    """Fraction of the channels Torch-Pruning keeps that labkit's criterion keeps too.

    labkit's choice for conv ``i``: the ``k`` channels of largest
    :func:`get_input_channel_importance` of the next layer, the order
    :func:`apply_channel_sorting` sorts them in.
    """
    next_layers = [*convs(model)[1:], model.classifier]
    shared = 0
    for layer, kept in zip(next_layers, theirs, strict=True):
        ranking = torch.argsort(get_input_channel_importance(layer.weight), descending=True,
                                stable=True)
        shared += len(set(ranking[:len(kept)].tolist()) & set(kept))
    return shared / sum(len(kept) for kept in theirs)


def compare(model: VGG, ratio: float, config: Config) -> dict:
    example = cifar_inputs(config, 1)
    ours = labkit_prune(model, ratio)
    labkit_widths = [get_num_channels_to_keep(c, ratio) for c in widths(model)]
    default, _ = torch_pruning_prune(model, example, ratio)
    matched, kept = torch_pruning_prune(model, example, ratio, keep=labkit_widths)
    same_channels = remove_channels(model, kept).eval()
    with torch.no_grad():
        probe = cifar_inputs(config, max(config.batch_sizes))
        difference = (matched(probe) - same_channels(probe)).abs().max().item()
    result = {
        "ratio": ratio,
        "labkit": size(ours, example),
        "torch_pruning_default": size(default, example),
        "torch_pruning_matched": size(matched, example),
        "same_channels_max_abs_difference": difference,
        "kept_overlap": kept_overlap(model, kept),
        "prune_time": as_dicts(time_calls({
            "labkit": lambda: labkit_prune(model, ratio),
            "torch_pruning": lambda: torch_pruning_prune(model, example, ratio,
                                                         keep=labkit_widths),
        }, config)),
        "latency": [],
    }
    for batch in config.batch_sizes:
        times = time_models({"labkit": ours, "torch_pruning": matched},
                            cifar_inputs(config, batch), config)
        result["latency"].append({
            "batch": batch, **as_dicts(times),
            "torch_pruning_over_labkit": speedup(times["torch_pruning"], times["labkit"])})
    return result


def labkit_keep(model: nn.Module, ratio: float) -> list[torch.Tensor]:
    """The channels labkit's criterion keeps in each group, in increasing order: the
    ``round((1 - r) * c)`` of largest :func:`group_importance`."""
    keep = []
    for group in channel_groups(model):
        ranking = torch.argsort(group_importance(model, group), descending=True, stable=True)
        keep.append(ranking[:get_num_channels_to_keep(group.channels, ratio)].sort().values)
    return keep


def torch_pruning_remove(model: nn.Module, keep: list[torch.Tensor],
                         inputs: torch.Tensor) -> nn.Module:
    """A copy of ``model`` from which Torch-Pruning's DepGraph removes, group by group
    (labkit's :func:`channel_groups` order), every channel not in ``keep[g]``."""
    pruned = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=inputs)
    for group, kept in zip(channel_groups(model), keep, strict=True):
        removed = sorted(set(range(group.channels)) - set(kept.tolist()))
        if removed:
            conv = pruned.get_submodule(group.convs[0])
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=removed).prune()
    return pruned.eval()


def compare_resnet(model: nn.Module, ratio: float, config: Config) -> dict:
    """The DepGraph oracle on the ResNet: same kept channels, same model."""
    example = cifar_inputs(config, 1)
    keep = labkit_keep(model, ratio)
    ours = remove_channels(model, keep).eval()
    theirs = torch_pruning_remove(model, keep, example)
    with torch.no_grad():
        probe = cifar_inputs(config, max(config.batch_sizes))
        difference = (ours(probe) - theirs(probe)).abs().max().item()
    shapes = {name: tuple(p.shape) for name, p in ours.named_parameters()}
    result = {
        "ratio": ratio,
        "groups": len(keep),
        "labkit": size(ours, example),
        "torch_pruning": size(theirs, example),
        "same_parameter_shapes": shapes == {name: tuple(p.shape)
                                            for name, p in theirs.named_parameters()},
        "max_abs_difference": difference,
        "prune_time": as_dicts(time_calls({
            "labkit": lambda: remove_channels(model, keep),
            "torch_pruning": lambda: torch_pruning_remove(model, keep, example),
        }, config)),
        "latency": [],
    }
    for batch in config.batch_sizes:
        times = time_models({"labkit": ours, "torch_pruning": theirs},
                            cifar_inputs(config, batch), config)
        result["latency"].append({
            "batch": batch, **as_dicts(times),
            "torch_pruning_over_labkit": speedup(times["torch_pruning"], times["labkit"])})
    return result


def run(config: Config) -> dict:
    model = cifar_model(config)
    resnet = cifar_resnet(config)
    return {"dense": size(model, cifar_inputs(config, 1)),
            "ratios": [compare(model, ratio, config) for ratio in config.channel_ratios],
            "resnet_dense": size(resnet, cifar_inputs(config, 1)),
            "resnet": [compare_resnet(resnet, ratio, config)
                       for ratio in config.channel_ratios]}


def markdown(results: dict) -> str:
    sizes = [("dense", "", results["dense"])]
    for r in results["ratios"]:
        sizes += [(f"{report.percent(r['ratio'])}", "labkit", r["labkit"]),
                  ("", "Torch-Pruning, its default widths", r["torch_pruning_default"]),
                  ("", "Torch-Pruning, labkit's widths", r["torch_pruning_matched"])]
    size_table = report.table(
        ("ratio", "pruned by", "conv widths", "parameters", "MACs (batch 1)"),
        [(ratio, who, " ".join(map(str, s["widths"])), f"{s['parameters']:,}", f"{s['macs']:,}")
         for ratio, who, s in sizes])
    latency_table = report.table(
        ("ratio", "batch", "labkit", "Torch-Pruning", "Torch-Pruning / labkit"),
        [(report.percent(r["ratio"]), row["batch"], report.milliseconds(row["labkit"]),
          report.milliseconds(row["torch_pruning"]), report.ratio(row["torch_pruning_over_labkit"]))
         for r in results["ratios"] for row in r["latency"]])
    agreement_table = report.table(
        ("ratio", "Torch-Pruning's kept channels that labkit keeps too",
         "max output difference, same channels", "time to prune: labkit",
         "time to prune: Torch-Pruning", "Torch-Pruning / labkit"),
        [(report.percent(r["ratio"]), report.percent(r["kept_overlap"]),
          f"{r['same_channels_max_abs_difference']:.1e}",
          report.milliseconds(r["prune_time"]["labkit"]),
          report.milliseconds(r["prune_time"]["torch_pruning"]),
          report.ratio(r["prune_time"]["torch_pruning"]["median_ms"]
                       / r["prune_time"]["labkit"]["median_ms"])) for r in results["ratios"]])
    return "\n\n".join([
        "**Size** of the CIFAR VGG after uniform channel pruning.", size_table,
        "**Latency** of the two pruned models of identical shapes (labkit's widths), ms.",
        latency_table,
        "**Which channels, and how fast the surgery is** (ms).", agreement_table,
        *resnet_markdown(results),
    ]) + "\n"


def resnet_markdown(results: dict) -> list[str]:
    """The ResNet tables: the DepGraph oracle, then latency and surgery time."""
    rows = results["resnet"]
    dense = results["resnet_dense"]
    oracle = report.table(
        ("ratio", "groups", "group widths", "parameters (labkit / Torch-Pruning)",
         "MACs, batch 1 (labkit / Torch-Pruning)", "same parameter shapes",
         "max output difference"),
        [("dense", "", " ".join(map(str, dense["widths"])), f"{dense['parameters']:,}",
          f"{dense['macs']:,}", "", "")]
        + [(report.percent(r["ratio"]), r["groups"], " ".join(map(str, r["labkit"]["widths"])),
            f"{r['labkit']['parameters']:,} / {r['torch_pruning']['parameters']:,}",
            f"{r['labkit']['macs']:,} / {r['torch_pruning']['macs']:,}",
            _yes(r["same_parameter_shapes"]), f"{r['max_abs_difference']:.1e}") for r in rows])
    latency = report.table(
        ("ratio", "batch", "labkit", "Torch-Pruning", "Torch-Pruning / labkit", "within 5%"),
        [(report.percent(r["ratio"]), row["batch"], report.milliseconds(row["labkit"]),
          report.milliseconds(row["torch_pruning"]), report.ratio(row["torch_pruning_over_labkit"]),
          _yes(abs(row["torch_pruning_over_labkit"] - 1) <= 0.05))
         for r in rows for row in r["latency"]])
    surgery = report.table(
        ("ratio", "labkit `remove_channels`", "Torch-Pruning DepGraph + prune",
         "Torch-Pruning / labkit"),
        [(report.percent(r["ratio"]), report.milliseconds(r["prune_time"]["labkit"]),
          report.milliseconds(r["prune_time"]["torch_pruning"]),
          report.ratio(r["prune_time"]["torch_pruning"]["median_ms"]
                       / r["prune_time"]["labkit"]["median_ms"])) for r in rows])
    return [
        "**CIFAR ResNet, residual channel groups**: both remove the channels labkit's "
        "criterion drops in each group (Torch-Pruning's DepGraph as the oracle).", oracle,
        "**Latency** of the two pruned ResNets, ms.", latency,
        "**Time of the surgery** on the ResNet, the same kept channels, ms.", surgery,
    ]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
