"""Plots, tables and interactive controls the labs draw, in two layers.

- :mod:`labkit.viz.generic`: :func:`table` (a pandas table with a number format per
  column), :func:`interactive` (ipywidgets controls above a figure they redraw, its
  figure at the default values stored as an ordinary image) and one function per kind of
  figure;
- :mod:`labkit.viz.labs`: the views of single labs, in lab order.

Both are importable from here (``viz.table``, ``viz.network_table``). A view draws what
other modules computed; ``viz`` trains, evaluates and times nothing.
"""

from labkit.viz.generic import (
    COLUMN_INCHES,
    STYLE,
    bars,
    curves,
    grouped_bars,
    histogram_overlay,
    histograms,
    image_grid,
    interactive,
    learning_curves,
    scatter_against,
    seed_table,
    table,
    use_style,
    wrap,
)
from labkit.viz.labs import (
    agp_schedule,
    apoz_bars,
    channel_cost_table,
    channel_sensitivity,
    cost_table,
    input_norms,
    kernel_grid,
    kernel_masks,
    latency_curves,
    layer_macs,
    layout_24,
    lottery_table,
    netadapt_curve,
    netadapt_family,
    network_table,
    pe_interleave,
    pe_load_balance,
    point_cloud_voxels,
    policy_table,
    prune_finetune_staircase,
    reconstruction_errors,
    search_history,
    selection_accuracy_table,
    steps_table,
)

__all__ = [
    "STYLE",
    "COLUMN_INCHES",
    "use_style",
    "wrap",
    "table",
    "seed_table",
    "interactive",
    "image_grid",
    "bars",
    "histograms",
    "histogram_overlay",
    "scatter_against",
    "curves",
    "grouped_bars",
    "learning_curves",
    "kernel_grid",
    "kernel_masks",
    "apoz_bars",
    "selection_accuracy_table",
    "reconstruction_errors",
    "cost_table",
    "layer_macs",
    "channel_sensitivity",
    "policy_table",
    "channel_cost_table",
    "search_history",
    "latency_curves",
    "netadapt_family",
    "netadapt_curve",
    "network_table",
    "agp_schedule",
    "steps_table",
    "prune_finetune_staircase",
    "lottery_table",
    "pe_interleave",
    "pe_load_balance",
    "layout_24",
    "point_cloud_voxels",
    "input_norms",
]
