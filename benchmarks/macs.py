"""Comparison 3: MAC counts, labkit against ``FlopCounterMode``, the formula and Torch-Pruning.

labkit's :func:`~labkit.measure.count_macs` and :func:`~labkit.measure.macs_per_layer`
read :class:`torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-accumulate
of a matrix product or a convolution, nothing for anything else). Checked here:

* the total equals ``FlopCounterMode``'s own total / 2, and the sum over layers (so no
  MAC hides outside a conv or a linear layer);
* each layer equals the textbook count, from the layer's output shape:
  ``N * C_out * H_out * W_out * (C_in / groups) * k_h * k_w`` for a conv and
  ``N * out * in`` for a linear layer;
* the count is linear in the batch size;
* Torch-Pruning's counter (``tp.utils.count_ops_and_params``, adapted from ptflops, run
  on one example as its documentation does) agrees on every conv; it adds the bias
  additions of a linear layer and counts BatchNorm, ReLU and pooling as operations, so
  its total is larger;
* labkit's MAC count of a sparse 3-D convolution
  (:func:`labkit.hardware.sparseconv.conv_macs`) equals ``FlopCounterMode`` / 2 on the
  dense ``conv3d`` and on the sparse gather-GEMM-scatter itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from labkit.hardware.sparseconv import (
    build_kernel_map,
    conv_macs,
    sparse_conv3d,
    synthetic_point_cloud,
    to_dense_grid,
    voxelize,
)
from labkit.measure import count_macs, macs_per_layer, prunable_layers
from labkit.models import MLP

from . import report
from .channels import labkit_prune
from .config import Config, cifar_inputs, cifar_model, lab_inputs, lab_model, seeded

NAME = "macs"
TITLE = "MAC counting: labkit against FlopCounterMode, the formula and Torch-Pruning"


def flop_counter_macs(compute) -> int:
    """``FlopCounterMode``'s total over ``compute()``, halved."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        compute()
    return counter.get_total_flops() // 2


def formula_macs(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """The textbook MACs of each conv and linear layer, from its output shape."""
    layers = prunable_layers(model)
    shapes = {}
    hooks = [layer.register_forward_hook(
        lambda module, args, output, name=name: shapes.__setitem__(name, output.shape))
        for name, layer in layers.items()]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    counts = {}
    for name, layer in layers.items():
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        else:
            per_output = layer.in_features
        counts[name] = math.prod(shapes[name]) * per_output
    return counts


def torch_pruning_macs(model: nn.Module, inputs: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Torch-Pruning's total and its count of each conv and linear layer."""
    total, _, per_module, _ = tp.utils.count_ops_and_params(model, inputs, layer_wise=True)
    return int(total), {name: int(per_module[layer])
                        for name, layer in prunable_layers(model).items()}


def check_model(name: str, model: nn.Module, inputs: torch.Tensor) -> dict:
    model.eval()
    labkit_total = count_macs(model, inputs)
    per_layer = macs_per_layer(model, inputs)
    formula = formula_macs(model, inputs)
    one = inputs[:1]
    tp_total, tp_layers = torch_pruning_macs(model, one)
    one_per_layer = macs_per_layer(model, one)
    layers = prunable_layers(model)
    linear_bias = {n: layer.out_features * (layer.bias is not None)
                   for n, layer in layers.items() if isinstance(layer, nn.Linear)}
    conv_names = [n for n, layer in layers.items() if isinstance(layer, nn.Conv2d)]
    return {
        "model": name,
        "batch": len(inputs),
        "labkit": labkit_total,
        "flop_counter": flop_counter_macs(lambda: model(inputs)),
        "sum_of_layers": sum(per_layer.values()),
        "formula": sum(formula.values()),
        "layers": len(per_layer),
        "layers_equal_formula": sum(per_layer[n] == formula[n] for n in per_layer),
        "labkit_batch_1": sum(one_per_layer.values()),
        "batch_linear": count_macs(model, one) * len(inputs) == labkit_total,
        "torch_pruning_batch_1": tp_total,
        "torch_pruning_convs_equal": sum(tp_layers[n] == one_per_layer[n] for n in conv_names),
        "convs": len(conv_names),
        "torch_pruning_linear_minus_labkit": sum(tp_layers[n] - one_per_layer[n]
                                                 for n in linear_bias),
        "linear_bias_additions": sum(linear_bias.values()),
    }


def check_sparse_conv(config: Config) -> dict:
    points = synthetic_point_cloud("sphere", config.point_cloud_points, seed=config.seed)
    coords, feats = voxelize(points, config.voxel_size)
    generator = torch.Generator().manual_seed(config.seed)
    channels = config.conv_channels
    feats = torch.randn(len(coords), channels, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, 3, generator=generator)
    kernel_map = build_kernel_map(coords, 3)
    counted = conv_macs(coords, kernel_map, weight)
    grid = to_dense_grid(coords, feats)
    return {
        "voxels": len(coords),
        "grid": list(grid.shape[2:]),
        "labkit_dense": counted.dense,
        "flop_counter_dense": flop_counter_macs(lambda: F.conv3d(grid, weight, padding=1)),
        "labkit_sparse": counted.sparse,
        "flop_counter_sparse": flop_counter_macs(
            lambda: sparse_conv3d(coords, feats, weight, kernel_map)),
    }


def run(config: Config) -> dict:
    cifar = cifar_model(config)
    batch = max(config.batch_sizes)
    models = [
        ("lab VGG", lab_model(config), lab_inputs(config, batch)),
        ("CIFAR VGG", cifar, cifar_inputs(config, batch)),
        ("CIFAR VGG, channels pruned 50%", labkit_prune(cifar, 0.5),
         cifar_inputs(config, batch)),
        ("MLP", seeded(MLP, config.seed), lab_inputs(config, batch)),
    ]
    return {"models": [check_model(name, model, inputs) for name, model, inputs in models],
            "sparse_conv": check_sparse_conv(config)}


def _mark(equal: bool) -> str:
    return "equal" if equal else "**differs**"


def markdown(results: dict) -> str:
    rows = []
    for r in results["models"]:
        tp_extra = r["torch_pruning_batch_1"] - r["labkit_batch_1"]
        rows.append((
            r["model"], f"{r['labkit']:,}", f"{r['labkit_batch_1']:,}",
            _mark(r["flop_counter"] == r["labkit"]),
            _mark(r["sum_of_layers"] == r["labkit"] == r["formula"]),
            f"{r['layers_equal_formula']}/{r['layers']}",
            _mark(r["batch_linear"]),
            f"{r['torch_pruning_batch_1']:,} ({tp_extra:+,})",
            f"{r['torch_pruning_convs_equal']}/{r['convs']}",
            f"{r['torch_pruning_linear_minus_labkit']:+,} / {r['linear_bias_additions']:,}",
        ))
    batch = results["models"][0]["batch"]
    models = report.table(
        ("model", f"labkit MACs, batch {batch}", "per example", "FlopCounterMode / 2",
         "sum of layers = formula", "layers = formula", "linear in batch",
         "Torch-Pruning per example (difference)", "Torch-Pruning convs equal",
         "Torch-Pruning linear extra / bias adds"), rows)
    s = results["sparse_conv"]
    grid = "×".join(map(str, s["grid"]))
    sparse = report.table(
        ("sparse conv3d, sphere", "labkit `conv_macs`", "FlopCounterMode / 2"),
        [(f"dense `conv3d` on the {grid} grid", f"{s['labkit_dense']:,}",
          _mark(s["flop_counter_dense"] == s["labkit_dense"])),
         (f"gather-GEMM-scatter on {s['voxels']:,} voxels", f"{s['labkit_sparse']:,}",
          _mark(s["flop_counter_sparse"] == s["labkit_sparse"]))])
    return "\n\n".join(["**Dense models.**", models, "**Sparse 3-D convolution** (3×3×3).",
                        sparse]) + "\n"
