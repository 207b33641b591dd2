"""Plots, tables and interactive controls the labs draw.

The labs keep the algorithm in view and call this module for the plumbing:

- :func:`table`: a pandas table with a number format per column (rendered as an HTML
  table in JupyterLab and in the book);
- :func:`interactive`: controls (ipywidgets) above a figure that they redraw; the figure
  at the default values is an ordinary image output, so a static page shows it too;
- one function per kind of figure the labs draw; each returns a
  :class:`~matplotlib.figure.Figure` outside pyplot's figure list, so it is shown once,
  where the notebook displays it (the last line of a cell, or ``display``).

Importing the module sets the figure style (:data:`STYLE`: fonts legible at the column
width) and, inside IPython, stores figures at twice their resolution ("retina").
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import pandas as pd
import torch
from matplotlib.figure import Figure

from labkit.measure import count_macs, fastest_run_ms
from labkit.pruning.schedule import agp_sparsity
from labkit.training import evaluate

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
}
"""matplotlib settings for every lab figure."""


def use_style() -> None:
    """Apply :data:`STYLE`; inside IPython, also store inline figures at 2x resolution."""
    matplotlib.rcParams.update(STYLE)
    from IPython import get_ipython

    if get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")


use_style()


def table(rows: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | pd.DataFrame,
          formats: Mapping[str, str | Callable[[Any], str]] | None = None,
          index: str | None = None, caption: str | None = None,
          missing: str | None = None) -> Any:
    """A table of ``rows`` with one number format per column.

    ``rows`` is a DataFrame, a list of row dicts, or a dict ``{row label: row dict}``
    (the labels become the index, named ``index``). ``formats`` maps a column to a
    format string (``"{:.1f}"``, ``"{:,}"``) or a function; other columns show as they
    are. ``missing`` is shown for a missing value (a row without that column), instead of
    ``nan``. Returns a pandas ``Styler`` (an HTML table in a notebook).
    """
    if isinstance(rows, pd.DataFrame):
        frame = rows
    elif isinstance(rows, Mapping):
        frame = pd.DataFrame.from_dict(dict(rows), orient="index")
    elif isinstance(rows, Sequence) and not isinstance(rows, str):
        frame = pd.DataFrame(list(rows))
    else:
        raise TypeError(f"rows must be a DataFrame, a list of dicts or a dict of dicts, "
                        f"got {type(rows).__name__}")
    formats = dict(formats or {})
    unknown = sorted(set(formats) - set(frame.columns))
    if unknown:
        raise ValueError(f"formats names columns {unknown} that the table does not have; "
                         f"its columns are {list(frame.columns)}")
    if index is not None:
        frame = frame.rename_axis(index)
    styled = frame.style.format(formats, na_rep=missing).format_index(
        lambda label: f"{label:g}" if isinstance(label, float) else label)
    return styled.set_caption(caption) if caption else styled


def seed_table(results: Mapping[Any, Sequence[float]], quantity: str, *, index: str,
               extra: Mapping[str, Mapping[Any, Any]] | None = None,
               formats: Mapping[str, str] | None = None) -> Any:
    """Runs over seeds, ``{method: [value per seed]}``, a row per method: the mean of
    ``quantity``, its range (max - min, the run-to-run spread that a difference between
    methods must beat) and each seed's value; then the ``extra`` columns
    (``{column: {method: value}}``, formatted by ``formats``)."""
    if not results or not all(results.values()):
        raise ValueError(f"seed_table needs at least one value per method, got {dict(results)}")
    extra = extra or {}
    rows = {label: {f"{quantity}, mean": statistics.mean(values),
                    "range": max(values) - min(values),
                    "per seed": " / ".join(f"{value:.1f}" for value in values),
                    **{column: by_label.get(label) for column, by_label in extra.items()}}
            for label, values in results.items()}
    return table(rows, {f"{quantity}, mean": "{:.2f}", "range": "{:.2f}", **(formats or {})},
                 index=index, missing="")


def interactive(draw: Callable[..., Any], **controls: Any) -> None:
    """Controls above the output of ``draw(**values)``, redrawn whenever one changes.

    Each keyword is an ipywidgets control (``FloatSlider``, ``Dropdown``, ...) whose
    ``value`` is passed to ``draw`` under that name. ``draw`` returns what to show (a
    :class:`~matplotlib.figure.Figure`, a table, text). The output at the controls'
    initial values is displayed as an ordinary output (an image for a figure), so the
    notebook stores it and a static page shows it; in a live kernel the controls redraw
    it in place.
    """
    import ipywidgets
    from IPython.display import display

    if not controls:
        raise ValueError("interactive needs at least one control, got none")
    for name, control in controls.items():
        if not isinstance(control, ipywidgets.ValueWidget):
            raise TypeError(f"control {name!r} must be an ipywidgets control with a value "
                            f"(FloatSlider, Dropdown, ...), got {type(control).__name__}")

    def output() -> Any:
        return draw(**{name: control.value for name, control in controls.items()})

    display(ipywidgets.HBox(list(controls.values())))
    handle = display(output(), display_id=True)

    def redraw(_change: Any) -> None:
        handle.update(output())

    for control in controls.values():
        control.observe(redraw, names="value")


# --- figures --------------------------------------------------------------------------


def _panels(count: int, width: float, height: float, **options: Any) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * count, height), layout="constrained")
    axes = fig.subplots(1, count, squeeze=False, **options)
    return fig, list(axes.flat)


def image_grid(images: torch.Tensor, titles: Sequence[Any], rows: int, cols: int,
               title: str = "") -> Figure:
    """The first ``rows * cols`` single-channel ``images`` (shape ``(N, 1, H, W)``) on a
    grid, each titled by its entry of ``titles``."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (N, 1, H, W), got {tuple(images.shape)}")
    fig = Figure(figsize=(cols, rows * 1.1), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, image, label in zip(axes.flat, images, titles, strict=False):
        ax.imshow(image[0].numpy(), cmap="gray_r")
        ax.set_title(str(label))
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def bars(panels: Mapping[str, Mapping[str, float] | torch.Tensor], ylabel: str = "",
         xlabel: str = "", sort: bool = False, sharey: bool = False) -> Figure:
    """One bar chart per panel: ``{panel title: {bar label: value}}``, or a 1-d tensor
    per panel (bars by position; ``sort`` orders them from highest to lowest)."""
    fig, axes = _panels(len(panels), 3.4, 2.8, sharey=sharey)
    for ax, (name, values) in zip(axes, panels.items(), strict=True):
        if isinstance(values, torch.Tensor):
            heights = values.sort(descending=True).values if sort else values
            ax.bar(range(heights.numel()), heights.tolist())
        else:
            ax.bar(list(values), list(values.values()))
            ax.tick_params(axis="x", rotation=45)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    return fig


def histograms(tensors: Mapping[str, torch.Tensor], xlabel: str = "weight",
               bins: int = 60) -> Figure:
    """One density histogram per tensor: ``{panel title: tensor}``."""
    fig, axes = _panels(len(tensors), 2.6, 2.4)
    for ax, (name, tensor) in zip(axes, tensors.items(), strict=True):
        ax.hist(tensor.detach().flatten().numpy(), bins=bins, density=True)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.locator_params(axis="x", nbins=4)
    axes[0].set_ylabel("density")
    return fig


def histogram_overlay(values: Mapping[str, torch.Tensor], xlabel: str, ylabel: str = "count",
                      title: str = "", bins: int = 50) -> Figure:
    """Histograms of several tensors on one axis, on shared bins from 0 to the largest
    value: ``{label: tensor}``."""
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.subplots()
    top = max(float(v.max()) for v in values.values())
    edges = torch.linspace(0, top, bins + 1).tolist()
    for label, tensor in values.items():
        ax.hist(tensor.detach().flatten().numpy(), bins=edges, alpha=0.6, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return fig


def scatter_against(reference: torch.Tensor, estimates: Mapping[str, torch.Tensor],
                    xlabel: str, ylabel: str = "estimate") -> Figure:
    """One panel per estimate: its entries against ``reference``'s, the line y = x and
    the correlation coefficient in the title."""
    fig, axes = _panels(len(estimates), 3.6, 3.2)
    x = reference.detach().flatten()
    for ax, (label, estimate) in zip(axes, estimates.items(), strict=True):
        y = estimate.detach().flatten()
        correlation = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
        ax.scatter(x.tolist(), y.tolist(), s=4)
        ax.axline((0, 0), slope=1, color="grey", linewidth=0.8)
        ax.set_title(f"{label}: correlation {correlation:.2f}")
        ax.set_xlabel(xlabel)
        ax.locator_params(axis="x", nbins=4)
    axes[0].set_ylabel(ylabel)
    return fig


def curves(lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str,
           ylabel: str, title: str = "", logy: bool = False,
           spread: Mapping[str, Sequence[float]] | None = None, *,
           hline: float | None = None, hline_label: str | None = None,
           vline: float | None = None, hspan: tuple[float, float] | None = None) -> Figure:
    """One line per entry of ``lines``: ``{label: (xs, ys)}``, markers at the points;
    ``spread`` (``{label: half-widths}``) draws a band of plus or minus it. ``hline`` and
    ``vline`` mark a threshold or a budget (red, dashed; ``hline_label`` names it in the
    legend), ``hspan`` a band ``(low, high)`` of the y axis (grey)."""
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    markers = "osv^D<>p"
    for number, (label, (xs, ys)) in enumerate(lines.items()):
        ax.plot(xs, ys, marker=markers[number % len(markers)], markersize=4, label=label)
        if spread and label in spread:
            low = [y - s for y, s in zip(ys, spread[label], strict=True)]
            high = [y + s for y, s in zip(ys, spread[label], strict=True)]
            ax.fill_between(xs, low, high, alpha=0.2)
    if hline is not None:
        ax.axhline(hline, color="tab:red", linestyle="--", linewidth=1, label=hline_label)
    if vline is not None:
        ax.axvline(vline, color="tab:red", linestyle="--")
    if hspan is not None:
        ax.axhspan(*hspan, color="grey", alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


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
    fig = Figure(figsize=(8, 2.3 * len(masks)), layout="constrained")
    axes = fig.subplots(len(masks), 1, squeeze=False)
    for ax, (name, mask) in zip(axes.flat, masks.items(), strict=True):
        kernel_grid(ax, weight, mask, rows, cols)
        ax.set_title(name)
    return fig


# --- tables ---------------------------------------------------------------------------


def cost_table(rows: Mapping[str, Mapping[str, Any]]) -> Any:
    """Parameters, MACs and latencies of models, each against the first (dense) row.

    ``rows`` maps a model's name to ``{"params": int, "MACs": int, <label>: Latency, ...}``
    (:class:`labkit.measure.Latency`, one per input the model was timed on). The table
    adds the MAC reduction (dense MACs / MACs) and, per latency, the median, the
    inter-quartile range and the speed-up (dense median / median).
    """
    if not rows:
        raise ValueError("cost_table needs at least one row, got none")
    dense = next(iter(rows.values()))
    timed = [key for key, value in dense.items() if hasattr(value, "median_ms")]
    table_rows = {}
    for name, row in rows.items():
        line = {"params": row["params"], "MACs": row["MACs"],
                "MAC reduction": dense["MACs"] / row["MACs"]}
        for key in timed:
            line[f"{key}: ms"] = row[key].median_ms
            line[f"{key}: IQR ms"] = row[key].iqr_ms
            line[f"{key}: speed-up"] = dense[key].median_ms / row[key].median_ms
        table_rows[name] = line
    formats = {"params": "{:,}", "MACs": "{:,}", "MAC reduction": "{:.2f}x"}
    for key in timed:
        formats.update({f"{key}: ms": "{:.3f}", f"{key}: IQR ms": "{:.3f}",
                        f"{key}: speed-up": "{:.2f}x"})
    return table(table_rows, formats, index="model")


# --- searches and schedules (labs 05 and 06) ------------------------------------------


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


def grouped_bars(groups: Mapping[str, Sequence[float]], categories: Sequence[str],
                 ylabel: str, title: str = "", logy: bool = False) -> Figure:
    """Side-by-side bars: for each category, one bar per group (``{group: values}``);
    ``logy`` puts the values on a log scale."""
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(groups)
    for number, (label, values) in enumerate(groups.items()):
        if len(values) != len(categories):
            raise ValueError(f"group {label!r} has {len(values)} values for "
                             f"{len(categories)} categories")
        offset = (number - (len(groups) - 1) / 2) * width
        ax.bar([i + offset for i in range(len(categories))], list(values), width=width,
               label=label)
    ax.set_xticks(range(len(categories)), list(categories))
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return fig


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


# --- hardware (lab 07) ----------------------------------------------------------------


def learning_curves(panels: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str,
                    ylabel: str, baseline: float | None = None,
                    baseline_label: str = "") -> Figure:
    """One panel per entry, ``{panel title: {line label: values per epoch}}``, with
    epochs counted from 1, sharing the y axis; ``baseline`` as a dotted line."""
    fig, axes = _panels(len(panels), 3.6, 3.0, sharey=True)
    styles = ("-o", "--s", ":v", "-.^")
    for ax, (title, lines) in zip(axes, panels.items(), strict=True):
        for style, (label, values) in zip(styles, lines.items(), strict=False):
            ax.plot(range(1, len(values) + 1), list(values), style, markersize=3, label=label)
        if baseline is not None:
            ax.axhline(baseline, color="grey", linestyle=":", label=baseline_label)
        ax.set(title=title, xlabel=xlabel)
    axes[0].set_ylabel(ylabel)
    axes[0].legend()
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


def input_norms(norms: Mapping[str, torch.Tensor], tokens: int) -> Figure:
    """One panel per layer: the L2 norm of each input feature over ``tokens`` calibration
    tokens, sorted, on a log scale. A few outlier features dominate a transformer's
    inputs, the reason Wanda weighs :math:`|W_{ij}|` by :math:`\\|X_j\\|_2`."""
    fig, axes = _panels(len(norms), 4.0, 3.2)
    for ax, (name, values) in zip(axes, norms.items(), strict=True):
        ordered = values.sort(descending=True).values
        ax.bar(range(len(ordered)), ordered, width=1.0, color="#1f5f99")
        ax.set_yscale("log")
        ax.set_title(f"{name}: inputs of {len(ordered)} features")
        ax.set_xlabel("input feature (sorted)")
    axes[0].set_ylabel(rf"$\|X_j\|_2$ over {tokens:,} tokens")
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


def layout_24(matrix: torch.Tensor, values: torch.Tensor, positions: torch.Tensor,
              packed: torch.Tensor) -> Figure:
    """The compressed 2:4 layout of a small matrix: the 2:4 matrix, its kept values and
    their 2-bit positions, each row's first metadata byte (``packed[:, 0]``) at the right."""
    rows, columns = matrix.shape
    fig = Figure(figsize=(12, 2.8), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [columns, columns // 2,
                                                             columns // 2]})
    panels = [(matrix, matrix != 0, f"2:4 sparse W ({rows} x {columns})"),
              (values, torch.ones(values.shape), f"values ({rows} x {columns // 2})"),
              (positions, torch.ones(positions.shape), "positions p (2 bits each)")]
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


def network_table(networks: Mapping[str, Any], example: torch.Tensor,
                  latency_batch: torch.Tensor, val_loader: Any, test_loader: Any,
                  finetune: Callable[[Any], Any] | None = None) -> Any:
    """Pruned networks side by side, ``{label: network}``, the first row the dense model:
    conv widths, MACs per image against the first row's, the fastest of 20 runs on
    ``latency_batch`` (one thread), validation and test accuracy, and, when ``finetune``
    is given, the same after ``finetune`` ran on a copy of every network but the first
    (blank for the first)."""
    if not networks:
        raise ValueError("network_table needs at least one network, got none")
    dense_macs = count_macs(next(iter(networks.values())), example)
    rows = {}
    for number, (label, network) in enumerate(networks.items()):
        tuned = None
        if finetune is not None and number > 0:
            tuned = copy.deepcopy(network)
            finetune(tuned)
        widths = [m.out_channels for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
        rows[label] = {"conv widths": str(tuple(widths)),
                       "MACs": count_macs(network, example) / dense_macs,
                       "ms": fastest_run_ms(network, latency_batch, runs=20),
                       "val (%)": evaluate(network, val_loader),
                       "test (%)": evaluate(network, test_loader),
                       "val, finetuned (%)": evaluate(tuned, val_loader) if tuned else None,
                       "test, finetuned (%)": evaluate(tuned, test_loader) if tuned else None}
    accuracy = ["val (%)", "test (%)", "val, finetuned (%)", "test, finetuned (%)"]
    return table(rows, {"MACs": "{:.3f}", "ms": "{:.3f}", **dict.fromkeys(accuracy, "{:.2f}")},
                 index="network", missing="")


def netadapt_family(family: Sequence[Any], example: torch.Tensor) -> Any:
    """NetAdapt's family (:func:`labkit.search.netadapt.netadapt`), a row per step: conv
    widths, the estimated latency and the step's constraint, MACs per image against the
    first network's, validation accuracy, and every candidate the step tried."""
    if not family:
        raise ValueError("netadapt_family needs at least one step, got none")
    dense_macs = count_macs(family[0].model, example)
    rows = {i: {"widths": str(step.widths), "ms": step.latency_ms,
                "constraint ms": step.constraint_ms,
                "MACs": count_macs(step.model, example) / dense_macs,
                "val (%)": step.val_accuracy,
                "candidates tried (val %)": ", ".join(
                    f"{name.removeprefix('backbone.')}->{width}: {accuracy:.1f}"
                    for name, width, accuracy in step.candidates)}
            for i, step in enumerate(family)}
    return table(rows, {"ms": "{:.3f}", "constraint ms": "{:.3f}", "MACs": "{:.3f}",
                        "val (%)": "{:.1f}"}, index="step")


def point_cloud_voxels(points: torch.Tensor, occupied: torch.Tensor, title: str,
                       voxel_title: str) -> Figure:
    """A 3-d point cloud (left, coloured by height) and its occupied voxels (right,
    ``occupied`` a 3-d bool grid)."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax_points = fig.add_subplot(1, 2, 1, projection="3d")
    ax_points.scatter(*points.T.tolist(), s=1, c=points[:, 2].tolist(), cmap="viridis")
    ax_points.set_title(title)
    ax_voxels = fig.add_subplot(1, 2, 2, projection="3d")
    ax_voxels.voxels(occupied.numpy(), facecolors="tab:orange", edgecolor="k", linewidth=0.2)
    ax_voxels.set_title(voxel_title)
    for ax in (ax_points, ax_voxels):
        ax.set_box_aspect((1, 1, 0.4))
    return fig
