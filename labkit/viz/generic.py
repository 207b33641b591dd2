"""The generic layer of the labs' views: tables, interactive controls and figures.

- :func:`table`: a pandas table with a number format per column, padded cells,
  right-aligned numbers and headers on one line (an HTML table in JupyterLab and in
  the book);
- :func:`wrap`: printed text broken into lines that fit the column;
- :func:`interactive`: controls (ipywidgets) above a figure that they redraw; the figure
  at the default values is an ordinary image output, so a static page shows it too;
- one function per kind of figure; each returns a :class:`~matplotlib.figure.Figure`
  outside pyplot's figure list, so it is shown once, where the notebook displays it (the
  last line of a cell, or ``display``).

Importing the module sets the figure style (:data:`STYLE`: fonts legible at the column
width) and, inside IPython, stores figures at twice their resolution ("retina").
"""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import pandas as pd
import torch
from matplotlib.figure import Figure

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

SMALLEST_FONT_PT = min(size for key, size in STYLE.items() if key.endswith("size"))
"""The smallest text :data:`STYLE` draws, in points: what a lab figure's legibility is
measured from, as a stored image does not say what sizes it holds."""

TABLE_STYLE = [
    {"selector": "th, td", "props": "padding: 0.3em 0.75em;"},
    {"selector": "th", "props": "white-space: nowrap;"},
    {"selector": "th.col_heading", "props": "text-align: right;"},
    {"selector": "th.row_heading", "props": "text-align: left;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left;"},
]
"""CSS of every :func:`table`: padded cells, headers on one line and over their numbers."""


def use_style() -> None:
    """Apply :data:`STYLE`; inside IPython, also store inline figures at 2x resolution."""
    matplotlib.rcParams.update(STYLE)
    from IPython import get_ipython

    if get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")


use_style()


# --- tables and controls ----------------------------------------------------------------


def table(rows: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | pd.DataFrame,
          formats: Mapping[str, str | Callable[[Any], str]] | None = None,
          index: str | None = None, caption: str | None = None,
          missing: str | None = None) -> Any:
    """A table of ``rows`` with one number format per column.

    ``rows`` is a DataFrame, a list of row dicts, or a dict ``{row label: row dict}``
    (the labels become the index, named ``index``). ``formats`` maps a column to a
    format string (``"{:.1f}"``, ``"{:,}"``) or a function; other columns show as they
    are. ``missing`` is shown for a missing value (a row without that column), instead of
    ``nan``. Cells are padded, numbers (and every formatted column) right-aligned, and
    headers stay on one line (:data:`TABLE_STYLE`). Returns a pandas ``Styler`` (an HTML
    table in a notebook).
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
    numbers = [column for column in frame.columns
               if pd.api.types.is_numeric_dtype(frame[column]) or column in formats]
    styled = styled.set_table_styles(TABLE_STYLE).set_properties(
        subset=numbers, **{"text-align": "right"})
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


RELOAD_NOTE = ("The controls redraw the output below while this cell runs in a live kernel; "
               "after reloading the page, run the cell again.")
"""Printed under every :func:`interactive`'s controls, an ordinary output: a page opened
without a kernel (a reloaded notebook, the book) shows no controls, or controls that no
longer redraw, until the cell runs again."""


def interactive(draw: Callable[..., Any], **controls: Any) -> None:
    """Controls above the output of ``draw(**values)``, redrawn whenever one changes.

    Each keyword is an ipywidgets control (``FloatSlider``, ``Dropdown``, ...) whose
    ``value`` is passed to ``draw`` under that name. ``draw`` returns what to show (a
    :class:`~matplotlib.figure.Figure`, a table, text). The output at the controls'
    initial values is displayed as an ordinary output (an image for a figure), so the
    notebook stores it and a static page shows it; in a live kernel the controls redraw
    it in place. Between them, :data:`RELOAD_NOTE` says to run the cell again after the
    page is reloaded: printed text, which the notebook stores, unlike the controls, and
    which the book keeps out of the output's figure and caption.
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
    print(wrap(RELOAD_NOTE))
    handle = display(output(), display_id=True)

    def redraw(_change: Any) -> None:
        handle.update(output())

    for control in controls.values():
        control.observe(redraw, names="value")


def wrap(text: str, width: int = 88) -> str:
    """``text`` with each line longer than ``width`` characters broken at spaces, its
    continuation lines indented four spaces past the line's own indent: printed text
    (a module's structure, an error message) that fits the book's column of 88."""
    if width < 20:
        raise ValueError(f"width must be at least 20 characters, got {width}")
    lines = []
    for line in text.splitlines():
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        lines += textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=False,
                               break_on_hyphens=False) or [line]
    return "\n".join(lines)


# --- figures ---------------------------------------------------------------------------


COLUMN_INCHES = 6.8
"""Widest figure, in inches: at :data:`STYLE`'s 100 dpi, with the 0.1 inch a side that
the inline backend's tight bounding box adds, 700 px, so the book's column of about
700 px shows it unscaled and 9 pt text stays at least 9 px tall."""

PANELS_PER_ROW = 2
"""Most panels side by side; more wrap to further rows."""


def _panels(count: int, width: float, height: float, **options: Any) -> tuple[Figure, list]:
    """A figure of ``count`` panels, each ``width`` x ``height`` inches, laid out for the
    column: at most :data:`PANELS_PER_ROW` per row, narrowed so that a row fits
    :data:`COLUMN_INCHES`; the unused cell of an incomplete last row is removed."""
    cols = min(count, PANELS_PER_ROW)
    rows = -(-count // cols)
    width = min(width, COLUMN_INCHES / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False, **options).flat)
    for ax in axes[count:]:
        ax.remove()
    return fig, axes[:count]


def _label_rows(axes: Sequence[Any], ylabel: str) -> None:
    """Put ``ylabel`` on the first panel of each row."""
    for ax in axes:
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)


def image_grid(images: torch.Tensor, titles: Sequence[Any], rows: int, cols: int,
               title: str = "") -> Figure:
    """The first ``rows * cols`` single-channel ``images`` (shape ``(N, 1, H, W)``) on a
    grid, each titled by its entry of ``titles``."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (N, 1, H, W), got {tuple(images.shape)}")
    side = min(1.0, COLUMN_INCHES / cols)
    fig = Figure(figsize=(side * cols, side * rows * 1.1), layout="constrained")
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
    _label_rows(axes, ylabel)
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
    _label_rows(axes, "density")
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
    the correlation coefficient under the estimate's name in the title (two lines, so
    that a long name stays over its panel)."""
    fig, axes = _panels(len(estimates), 3.6, 3.2)
    x = reference.detach().flatten()
    for ax, (label, estimate) in zip(axes, estimates.items(), strict=True):
        y = estimate.detach().flatten()
        correlation = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
        ax.scatter(x.tolist(), y.tolist(), s=4)
        ax.axline((0, 0), slope=1, color="grey", linewidth=0.8)
        ax.set_title(f"{label}\ncorrelation {correlation:.2f}")
        ax.set_xlabel(xlabel)
        ax.locator_params(axis="x", nbins=4)
    _label_rows(axes, ylabel)
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
    _label_rows(axes, ylabel)
    axes[0].legend()
    return fig
