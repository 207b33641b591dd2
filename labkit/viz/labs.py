"""Views of single labs, in lab order: each draws what the lab's labkit module computed.

Nothing here trains, evaluates or times a network: an experiment returns a pandas
DataFrame from the module of its concept (:func:`labkit.measure.costs`,
:func:`labkit.search.comparison.compare_networks`,
:func:`labkit.search.netadapt.family_frame`), and the view formats it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import pandas as pd
import torch
from matplotlib.figure import Figure

from labkit.hardware.sparseconv import SceneBenchmark
from labkit.pruning.schedule import agp_sparsity
from labkit.viz.generic import (
    COLUMN_INCHES,
    _label_rows,
    _panels,
    bars,
    curves,
    grouped_bars,
    histograms,
    learning_curves,
    seed_table,
    table,
)

# --- lab 01: granularity --------------------------------------------------------------


def kernel_grid(ax: Any, weight: torch.Tensor, mask: torch.Tensor, rows: int = 8,
                cols: int = 16) -> None:
    """Draw the kernels ``weight[:rows, :cols]`` of a 4-d conv weight on ``ax``, one blank
    pixel between kernels: kept weights coloured by ``|w|``, pruned ones grey."""
    if weight.dim() != 4 or mask.shape != weight.shape:
        raise ValueError(f"weight must be a 4-d conv weight and mask of its shape, got "
                         f"{tuple(weight.shape)} and {tuple(mask.shape)}")
    weight, mask = weight.detach()[:rows, :cols], mask[:rows, :cols]
    rows, cols, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    size = (rows * (k + 1) - 1, cols * (k + 1) - 1)
    background = torch.ones(size)
    kept = torch.full(size, float("nan"))
    for o in range(rows):
        for i in range(cols):
            block = (slice(o * (k + 1), o * (k + 1) + k), slice(i * (k + 1), i * (k + 1) + k))
            background[block] = 0.8
            kept[block] = torch.where(mask[o, i], weight[o, i].abs(), float("nan"))
    ax.imshow(background.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.imshow(kept.numpy(), cmap="viridis", vmin=0, vmax=float(weight.abs().max()))
    ax.set_xticks([])
    ax.set_yticks([])


def kernel_masks(weight: torch.Tensor, masks: Mapping[str, torch.Tensor], rows: int = 8,
                 cols: int = 16) -> Figure:
    """One :func:`kernel_grid` panel per mask, stacked: ``{panel title: mask}``."""
    fig = Figure(figsize=(COLUMN_INCHES, 2.0 * len(masks)), layout="constrained")
    axes = fig.subplots(len(masks), 1, squeeze=False)
    for ax, (name, mask) in zip(axes.flat, masks.items(), strict=True):
        kernel_grid(ax, weight, mask, rows, cols)
        ax.set_title(name)
    return fig


# --- lab 02: criteria -----------------------------------------------------------------


def sparsity_curves(accuracy: pd.DataFrame, xlabel: str, title: str = "") -> Figure:
    """Validation accuracy against sparsity, a line per row of ``accuracy`` (a column per
    sparsity), as :func:`labkit.pruning.masking.accuracy_by_sparsity` or
    :func:`~labkit.pruning.masking.slimming_accuracy` computed it."""
    sparsities = list(accuracy.columns)
    return curves({label: (sparsities, row.tolist()) for label, row in accuracy.iterrows()},
                  xlabel=xlabel, ylabel="validation accuracy (%)", title=title)


def sparsity_table(accuracy: pd.DataFrame, caption: str) -> Any:
    """The accuracies of :func:`sparsity_curves` as a table, a column per sparsity (as a
    percentage), one decimal."""
    renamed = accuracy.rename(columns=lambda sparsity: f"{sparsity:.0%}")
    return table(renamed, dict.fromkeys(renamed.columns, "{:.1f}"), caption=caption)


# --- labs 03 and 03b: neurons and residual networks -----------------------------------


def apoz_bars(apoz_per_layer: Mapping[str, torch.Tensor]) -> Figure:
    """APoZ of every channel, a panel per ReLU (:func:`labkit.pruning.neurons.collect_apoz`),
    channels sorted from most to fewest zeros."""
    return bars({name.removeprefix("backbone."): values
                 for name, values in apoz_per_layer.items()},
                ylabel="APoZ", xlabel="channel (sorted)", sort=True, sharey=True)


def selection_accuracy_table(accuracy: pd.DataFrame) -> Any:
    """Validation accuracy per way of choosing channels, a row per prune ratio, as
    :func:`labkit.pruning.neurons.channel_selection_accuracy` computed it."""
    return table(accuracy, dict.fromkeys(accuracy.columns, "{:.2f}%"),
                 caption="validation accuracy, no finetuning")


def reconstruction_errors(errors: pd.DataFrame, conv: str, next_conv: str,
                          channels: int) -> Figure:
    """Relative error of ``next_conv``'s output against the channels of ``conv`` kept (of
    ``channels``), a line per way of keeping them, as
    :func:`labkit.pruning.neurons.selection_errors` computed it."""
    counts = list(errors.index)
    return curves({method: (counts, errors[method].tolist()) for method in errors.columns},
                  xlabel=f"channels of {conv} kept (of {channels})",
                  ylabel=f"relative error of {next_conv}'s output", logy=True,
                  title="Reconstruction error on validation images")


def cost_table(costs: pd.DataFrame) -> Any:
    """Parameters, MACs and latencies of models against the first (dense) one, as
    :func:`labkit.measure.costs` (or :func:`labkit.measure.cost_frame`) computed them."""
    formats = {"params": "{:,}", "MACs": "{:,}", "MAC reduction": "{:.2f}x"}
    for column in costs.columns:
        if column.endswith((": ms", ": IQR ms")):
            formats[column] = "{:.3f}"
        elif column.endswith(": speed-up"):
            formats[column] = "{:.2f}x"
    return table(costs, formats)


# --- lab 05: AMC and NetAdapt ---------------------------------------------------------


def layer_macs(macs: Mapping[str, int]) -> Any:
    """MACs per layer, ``{layer: MACs}`` as :func:`labkit.measure.macs_per_layer` counts
    them, a row per layer."""
    return table({name: {"MACs": count} for name, count in macs.items()}, {"MACs": "{:,}"},
                 index="layer")


def channel_sensitivity(ratios: Sequence[float], scan: Mapping[int, Sequence[float]],
                        convs: Sequence[str]) -> Figure:
    """A :func:`labkit.pruning.sensitivity.channel_ratio_scan` over the grid ``ratios``:
    a curve per conv (``convs``, in the scan's order), validation accuracy against the
    ratio of that conv alone."""
    if len(convs) != len(scan):
        raise ValueError(f"convs must name each of the scan's {len(scan)} convs, got "
                         f"{list(convs)}")
    return curves({name.removeprefix("backbone."): (list(ratios), scan[layer])
                   for layer, name in enumerate(convs)},
                  "pruning ratio of this conv alone", "validation accuracy (%)",
                  "Channel-pruning sensitivity")


def policy_table(policies: pd.DataFrame) -> Any:
    """Policies over runs, as :func:`labkit.search.comparison.compare_policies` evaluated
    them: a row per policy with the mean validation accuracy, its range over the runs,
    each run's accuracy and the most MACs any run costs (a fraction of the dense MACs)."""
    runs = policies.groupby(level="policy", sort=False)
    return seed_table({label: run["val (%)"].tolist() for label, run in runs}, "val (%)",
                      index="policy", extra={"MACs, most": runs["MACs"].max().to_dict()},
                      formats={"MACs, most": "{:.3f}"})


def channel_cost_table(costs: pd.DataFrame) -> Any:
    """A conv's channels, the MACs one of them costs and the accuracy with the conv
    pruned alone, as :func:`labkit.search.comparison.channel_costs` computed them."""
    accuracy = [column for column in costs.columns if column.startswith("val (%)")]
    return table(costs, {"MACs of one channel": "{:,}", **dict.fromkeys(accuracy, "{:.1f}")})


def netadapt_curve(family: Sequence[Any], latency_budget: float) -> Figure:
    """NetAdapt's family, a list of :class:`labkit.search.netadapt.NetAdaptStep`:
    validation accuracy against estimated latency, step by step, with the budget, a
    fraction ``latency_budget`` of the first network's latency, as a dashed line."""
    if not family:
        raise ValueError("netadapt_curve needs at least one step, got none")
    return curves({"NetAdapt family (steps 0, 1, ...)": (
                       [step.latency_ms for step in family],
                       [step.val_accuracy for step in family])},
                  "estimated latency (ms per batch of 64)", "validation accuracy (%)",
                  vline=latency_budget * family[0].latency_ms)


def search_history(accuracy: Sequence[float], warmup: int, baseline: float,
                   baseline_label: str, window: int = 10) -> Figure:
    """A search's accuracy per episode: the points, their running mean over ``window``
    episodes, the best so far, the first ``warmup`` (random) episodes shaded and a
    ``baseline`` policy's accuracy as a dashed line."""
    if not 1 <= window <= len(accuracy):
        raise ValueError(f"window must be in [1, {len(accuracy)}] (the episodes), got {window}")
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    values = torch.tensor(list(accuracy), dtype=torch.float64)
    ax.axvspan(0, warmup, color="0.9", label="warm-up (random actions)")
    ax.plot(values.tolist(), ".", color="tab:blue", alpha=0.5, label="episode")
    running = values.unfold(0, window, 1).mean(dim=1)
    ax.plot(range(window - 1, len(values)), running.tolist(), color="tab:blue",
            label=f"mean of {window} episodes")
    ax.plot(values.cummax(dim=0).values.tolist(), color="tab:green", label="best so far")
    ax.axhline(baseline, color="tab:red", linestyle="--", label=baseline_label)
    ax.set_xlabel("episode")
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="lower right")
    return fig


def latency_curves(table: Any) -> Figure:
    """NetAdapt's lookup table (:class:`labkit.search.netadapt.LatencyTable`): each conv's
    latency against its output width, at full input width."""
    lines = {}
    for layer, name in enumerate(table.layers):
        full_input = table.input_widths(layer)[-1]
        lines[name.removeprefix("backbone.")] = (
            list(table.widths[layer]),
            [table.block_ms(layer, full_input, width) for width in table.widths[layer]])
    return curves(lines, "output channels", "ms per batch of 64 (fastest run)",
                  "Latency lookup table, this machine, 1 thread")


def netadapt_family(family: pd.DataFrame) -> Any:
    """NetAdapt's family, a row per step, as :func:`labkit.search.netadapt.family_frame`
    computed it: conv widths, estimated latency and the step's constraint, MACs against
    the first network's, validation accuracy and every candidate the step tried."""
    return table(family, {"ms": "{:.3f}", "constraint ms": "{:.3f}", "MACs": "{:.3f}",
                          "val (%)": "{:.1f}"})


def network_table(networks: pd.DataFrame) -> Any:
    """Pruned networks side by side, as :func:`labkit.search.comparison.compare_networks`
    measured them: conv widths, MACs against the dense network's, the fastest run in ms,
    validation and test accuracy, before and (blank where not done) after finetuning."""
    accuracy = ["val (%)", "test (%)", "val, finetuned (%)", "test, finetuned (%)"]
    return table(networks, {"MACs": "{:.3f}", "ms": "{:.3f}", **dict.fromkeys(accuracy, "{:.2f}")},
                 missing="")


# --- lab 06: the finetuning loop ------------------------------------------------------


def agp_schedule(n: int = 10, s_final: float = 0.9) -> Figure:
    """AGP's cubic schedule from 0 to ``s_final`` in ``n`` steps against a linear one
    (left), and the share of the surviving weights each step removes (right)."""
    fig, (ax_s, ax_r) = _panels(2, 3.6, 3.0)
    steps = range(n + 1)
    for label, values in (("cubic (AGP)", [agp_sparsity(t, n, 0.0, s_final) for t in steps]),
                          ("linear", [s_final * t / n for t in steps])):
        ax_s.plot(list(steps), values, "-o", markersize=3, label=label)
        removed = [(b - a) / (1 - a) for a, b in zip(values, values[1:], strict=False)]
        ax_r.plot(range(1, n + 1), removed, "-o", markersize=3, label=label)
    ax_s.set(xlabel="pruning step t", ylabel="sparsity", title="sparsity schedule")
    ax_r.set(xlabel="pruning step t", ylabel="share of survivors removed",
             title="what each step removes")
    ax_s.legend()
    return fig


def steps_table(steps: Sequence[Any], tuned: str, pruned: str | None = None, *,
                index: str = "sparsity") -> Any:
    """Pruning steps (:class:`labkit.pruning.schedule.Step`), a row per step at its
    sparsity: the validation accuracy after finetuning (column ``tuned``) and, when
    ``pruned`` names a column, just after pruning before it (blank where a step has none)."""
    rows = {round(step.sparsity, 3): {**({pruned: step.pruned_val_accuracy} if pruned else {}),
                                      tuned: step.val_accuracy} for step in steps}
    return table(rows, dict.fromkeys([pruned, tuned] if pruned else [tuned], "{:.1f}"),
                 index=index, missing="")


def prune_finetune_staircase(steps: Sequence[Any], dense_accuracy: float) -> Figure:
    """Iterative pruning as a staircase: from the dense point, each step
    (:class:`labkit.pruning.schedule.Step`) falls to its accuracy just after pruning and
    climbs to its accuracy after finetuning, at its sparsity."""
    xs, ys = [0.0], [dense_accuracy]
    for step in steps:
        xs += [step.sparsity, step.sparsity]
        ys += [step.pruned_val_accuracy, step.val_accuracy]
    return curves({"iterative": (xs, ys)}, "sparsity", "validation accuracy (%)",
                  "iterative pruning: prune (down), finetune (up)")


def steps_frame_table(steps: pd.DataFrame) -> Any:
    """The steps of one pruning run as :func:`labkit.pruning.schedule.steps_frame`
    computed them: the share of the survivors each step removes, in percent, and the
    validation accuracy after pruning and after finetuning."""
    return table(steps, {"removes of the survivors": "{:.0%}", "after pruning (%)": "{:.1f}",
                         "after finetuning (%)": "{:.1f}"})


def accuracy_against_sparsity(methods: Mapping[str, Sequence[Any]],
                              dense_accuracy: float) -> Figure:
    """Validation accuracy against sparsity, a line per method
    (``{method: [schedule.Step, ...]}``), the band one point below the dense model."""
    if not methods:
        raise ValueError("methods must name at least one method, got none")
    return curves({name: ([step.sparsity for step in steps],
                          [step.val_accuracy for step in steps])
                   for name, steps in methods.items()}, "sparsity", "validation accuracy (%)",
                  hspan=(dense_accuracy - 1, dense_accuracy))


def lottery_curves(results: Mapping[float, Any], dense_accuracy: float) -> Figure:
    """Validation accuracy after every epoch of retraining, the winning ticket against
    the random re-initialisation of its mask, a panel per sparsity
    (:class:`labkit.pruning.schedule.LotteryResult`), the dense model dotted."""
    if not results:
        raise ValueError("results must hold at least one sparsity, got none")
    return learning_curves(
        {f"{sparsity:.0%} sparsity": {"winning ticket (rewound)": result.ticket_history,
                                      "random re-initialisation": result.reinit_history}
         for sparsity, result in results.items()},
        "epoch of retraining", "validation accuracy (%)", baseline=dense_accuracy,
        baseline_label="dense")


def lottery_table(results: Mapping[float, Any], lr: float, epochs: Sequence[int] = (1, 2, 3)
                  ) -> Any:
    """Winning tickets against random re-initialisation
    (:class:`labkit.pruning.schedule.LotteryResult` per sparsity): validation accuracy
    after the first ``epochs`` of retraining, the best epoch's, and the kept model's test
    accuracy."""
    columns = [*(f"epoch {e}" for e in epochs), "best", "test, kept model"]
    rows = {(f"{sparsity:.0%}", name): dict(zip(columns, [*(history[e - 1] for e in epochs),
                                                          max(history), test], strict=True))
            for sparsity, result in results.items()
            for name, history, test in (("ticket", result.ticket_history,
                                         result.ticket_test_accuracy),
                                        ("re-init", result.reinit_history,
                                         result.reinit_test_accuracy))}
    return table(rows, dict.fromkeys(columns, "{:.1f}"),
                 caption=f"validation accuracy (%), learning rate {lr}")


# --- lab 07: EIE ----------------------------------------------------------------------


def codebook_histogram(weight: torch.Tensor, codebook: torch.Tensor, layer: str) -> Figure:
    """The non-zero weights of ``layer`` as a histogram (blue) and the shared values of
    its ``codebook`` (red lines; entry 0, the value zero, left out), as
    :func:`labkit.hardware.eie.share_weights` found them."""
    if codebook.dim() != 1 or len(codebook) < 2:
        raise ValueError(f"codebook must be 1-d with zero and at least one shared value, "
                         f"got shape {tuple(codebook.shape)}")
    fig = histograms({f"{layer}'s surviving weights (blue) and the {len(codebook) - 1} "
                      "shared values (red)": weight[weight != 0]}, bins=80)
    for value in codebook[1:].tolist():
        fig.axes[0].axvline(value, color="tab:red", linewidth=1)
    return fig


def pe_interleave(matrix: torch.Tensor, num_pes: int) -> Figure:
    """A small sparse matrix with each non-zero coloured by the processing element that
    stores it (row ``i`` on PE ``i mod num_pes``), its value written in the cell."""
    if matrix.dim() != 2:
        raise ValueError(f"matrix must be 2-d, got shape {tuple(matrix.shape)}")
    rows, columns = matrix.shape
    palette = matplotlib.colormaps["tab10"]
    image = torch.ones(rows, columns, 3)
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for row, column in torch.nonzero(matrix).tolist():
        image[row, column] = torch.tensor(palette(row % num_pes)[:3])
        ax.text(column, row, f"{matrix[row, column]:g}", ha="center", va="center",
                color="white")
    ax.imshow(image)
    ax.set_xticks(range(columns), [f"$x_{j}$" for j in range(columns)])
    ax.set_yticks(range(rows), [f"row {row}: PE{row % num_pes}" for row in range(rows)])
    ax.set_xticks([i - 0.5 for i in range(columns + 1)], minor=True)
    ax.set_yticks([i - 0.5 for i in range(rows + 1)], minor=True)
    ax.grid(which="minor", color="lightgray")
    ax.tick_params(which="minor", length=0)
    ax.set_title(f"W: rows interleaved over {num_pes} PEs")
    return fig


def pe_load_balance(balance: pd.DataFrame, num_pes: int = 8) -> Figure:
    """EIE's load balance (:func:`labkit.hardware.eie.load_balance`): left, the work of
    each of ``num_pes`` PEs with their mean dashed; right, the lock-step cycles per PE
    count (log scale) against perfect balance (outlined)."""
    work = torch.tensor(balance.loc[num_pes, "work per PE"], dtype=torch.float64)
    counts = [str(n) for n in balance.index]
    fig = bars({f"work per PE, {num_pes} PEs (mean/max {(work.mean() / work.max()).item():.0%})":
                {f"PE{k}": w for k, w in enumerate(work.tolist())},
                "cycles over all activation vectors": dict(zip(counts, balance["cycles"],
                                                               strict=True))},
               ylabel="entries processed / cycles")
    fig.axes[0].axhline(work.mean(), color="tab:red", linestyle="--", label="mean")
    fig.axes[1].bar(counts, balance["perfect balance"].tolist(), color="none",
                    edgecolor="black", label="perfect balance")
    fig.axes[1].set(yscale="log", xlabel="number of PEs N")
    for ax in fig.axes:
        ax.legend()
    return fig


def eie_storage_table(storage: pd.DataFrame, caption: str | None = None) -> Any:
    """A layer's storage, dense, CSR and EIE on several PE counts, as
    :func:`labkit.hardware.eie.storage_table` computed it: bits, the factor against
    dense, entries, padding entries, column pointer bits and their share."""
    return table(storage, {"bits": "{:,}", "vs dense": "{:.2f}x", "entries": "{:,.0f}",
                           "padding": "{:,.0f}", "pointer bits": "{:,.0f}",
                           "pointer share": "{:.0%}"}, caption=caption, missing="")


def load_balance_table(balance: pd.DataFrame) -> Any:
    """EIE's load balance per PE count (:func:`labkit.hardware.eie.load_balance`) without
    the work of each PE (:func:`pe_load_balance` draws it): cycles, perfect balance and
    the two efficiencies in percent."""
    return table(balance.drop(columns="work per PE"),
                 {"cycles": "{:,}", "perfect balance": "{:,.0f}",
                  "lock-step efficiency": "{:.0%}", "mean/max work": "{:.0%}"})


# --- lab 07b: 2:4 sparsity and sparse convolution -------------------------------------


def layout_24(matrix: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
              packed: torch.Tensor) -> Figure:
    """The compressed 2:4 layout of a small matrix: the 2:4 matrix, its kept values and
    their 2-bit positions, each row's first metadata byte (``packed[:, 0]``) at the right."""
    rows, columns = matrix.shape
    fig = Figure(figsize=(COLUMN_INCHES, 2.1), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [columns, columns // 2,
                                                             columns // 2]})
    panels = [(matrix, matrix != 0, f"2:4 sparse W ({rows} x {columns})"),
              (values, torch.ones(values.shape), f"values ({rows} x {columns // 2})"),
              (positions, torch.ones(positions.shape), "positions p\n(2 bits each)")]
    for ax, (shown, shade, title) in zip(axes, panels, strict=True):
        ax.imshow(shade, cmap="Blues", vmin=0, vmax=1.6)
        for row in range(shown.shape[0]):
            for column in range(shown.shape[1]):
                ax.text(column, row, f"{shown[row, column]:.0f}", ha="center", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title)
    for group in range(4, columns, 4):
        axes[0].axvline(group - 0.5, color="black")
    for ax in axes[1:]:
        for group in range(2, columns // 2, 2):
            ax.axvline(group - 0.5, color="black")
    axes[2].set_yticks(range(rows), [f"byte {b:3d} = {b:08b}" for b in packed[:, 0].tolist()])
    axes[2].yaxis.tick_right()
    return fig


def point_cloud_voxels(points: torch.Tensor, occupied: torch.Tensor, title: str,
                       voxel_title: str) -> Figure:
    """A 3-d point cloud (left, coloured by height) and its occupied voxels (right,
    ``occupied`` a 3-d bool grid)."""
    fig = Figure(figsize=(COLUMN_INCHES, 3.0), layout="constrained")
    ax_points = fig.add_subplot(1, 2, 1, projection="3d")
    ax_points.scatter(*points.T.tolist(), s=1, c=points[:, 2].tolist(), cmap="viridis")
    ax_points.set_title(title)
    ax_voxels = fig.add_subplot(1, 2, 2, projection="3d")
    ax_voxels.voxels(occupied.numpy(), facecolors="tab:orange", edgecolor="k", linewidth=0.2)
    ax_voxels.set_title(voxel_title)
    for ax in (ax_points, ax_voxels):
        ax.set_box_aspect((1, 1, 0.4))
    return fig


def scene_table(scenes: pd.DataFrame, caption: str | None = None) -> Any:
    """Sparse against dense convolution, a row per scene, as
    :func:`labkit.hardware.sparseconv.benchmark_scenes` measured it: occupancy in
    percent, the MAC reduction and the speed-ups as factors, times in ms."""
    return table(scenes, {"occupancy": "{:.2%}", "voxels": "{:,}", "fewer MACs": "{:.1f}x",
                          "sparse ms": "{:.2f}", "sparse IQR": "{:.2f}",
                          "kernel map ms": "{:.2f}", "speed-up": "{:.1f}x",
                          "speed-up with map": "{:.1f}x"}, caption=caption)


def scene_timings(bench: SceneBenchmark, title: str = "") -> Figure:
    """The median time of the sparse convolution per scene against the one dense
    ``conv3d`` (a :class:`labkit.hardware.sparseconv.SceneBenchmark`), on a log scale."""
    if not isinstance(bench, SceneBenchmark):
        raise TypeError(f"bench must be a SceneBenchmark from sparseconv.benchmark_scenes, "
                        f"got {type(bench).__name__}")
    scenes = bench.table
    return grouped_bars({"sparse (gather-GEMM-scatter)": scenes["sparse ms"].tolist(),
                         "dense conv3d": [bench.dense.median_ms] * len(scenes)},
                        [f"{occupancy:.1%} occupied" for occupancy in scenes["occupancy"]],
                        "median time (ms)", title, logy=True)


# --- lab 08: pruning a language model -------------------------------------------------


def input_norms(norms: Mapping[str, torch.Tensor], tokens: int, log: bool = True) -> Figure:
    """One panel per layer: the L2 norm of each input feature over ``tokens`` calibration
    tokens, sorted, on a log scale (a linear one when ``log`` is false), drawn as one filled
    outline (sharp at any resolution, where hundreds of one-pixel bars blur). A few outlier
    features dominate a transformer's inputs, the reason Wanda weighs :math:`|W_{ij}|` by
    :math:`\\|X_j\\|_2`."""
    fig, axes = _panels(len(norms), 3.5, 2.8)
    for ax, (name, values) in zip(axes, norms.items(), strict=True):
        ordered = values.sort(descending=True).values
        ax.stairs(ordered.tolist(), fill=True, color="#1f5f99")
        ax.set_yscale("log" if log else "linear")
        ax.set_title(f"{name}: inputs of {len(ordered)} features")
        ax.set_xlabel("input feature (sorted)")
    _label_rows(axes, rf"$\|X_j\|_2$ over {tokens:,} tokens")
    return fig


def perplexity_bands(ranges: pd.DataFrame, split: str = "validation", *,
                     dense: float | None = None) -> Figure:
    """Perplexity against sparsity, a line per criterion, from the ranges over calibration
    sets that :func:`labkit.pruning.llm.ranges` computed: the middle of each range, a band
    for its extent, the ``dense`` model's perplexity dashed. N:M targets, not a sparsity
    of the axis, are left out."""
    if list(ranges.index.names) != ["target", "criterion"]:
        raise ValueError(f"ranges must be indexed by target and criterion, as llm.ranges "
                         f"gives them by default, got {list(ranges.index.names)}")
    columns = [f"{split} min", f"{split} max"]
    if not set(columns) <= set(ranges.columns):
        raise ValueError(f"split must name a split of the ranges, got {split!r}; its "
                         f"columns are {list(ranges.columns)}")
    low, high = (ranges[column].unstack("criterion") for column in columns)
    kept = sorted((label for label in low.index if label.endswith("%")),
                  key=lambda label: float(label.removesuffix("%")))
    if not kept:
        raise ValueError(f"ranges must hold a sparsity target, got {list(low.index)}")
    xs = [float(label.removesuffix("%")) for label in kept]
    criteria = ranges.index.unique("criterion")
    middle, half = (high + low).loc[kept] / 2, (high - low).loc[kept] / 2
    return curves({name: (xs, middle[name].tolist()) for name in criteria},
                  "sparsity of every linear layer (%)", f"{split} perplexity",
                  spread={name: half[name].tolist() for name in criteria},
                  hline=dense, hline_label="dense" if dense is not None else None)


def layer_error_bars(errors: pd.DataFrame) -> Figure:
    """Each layer's calibration reconstruction error at one target, a bar per criterion
    on a log scale, from :func:`labkit.pruning.llm.layer_errors`."""
    targets = list(errors.columns.unique("target"))
    if len(targets) != 1:
        raise ValueError(f"errors must hold one target, got {targets}")
    fig = grouped_bars(errors[targets[0]].to_dict("list"),
                       [name.removeprefix("blocks.") for name in errors.index],
                       "reconstruction error", f"at {targets[0]}", logy=True)
    fig.axes[0].legend(loc="upper left", bbox_to_anchor=(1, 1))
    fig.axes[0].tick_params(axis="x", labelrotation=45)
    return fig
