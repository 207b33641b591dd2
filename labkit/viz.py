"""Plots, tables and interactive controls the labs draw.

The labs keep the algorithm in view and call this module for the plumbing:

- :func:`table`: a pandas table with a number format per column (rendered as an HTML
  table in JupyterLab and in the book);
- :func:`interactive`: controls (ipywidgets) above a figure that they redraw; the figure
  at the default values is an ordinary image output, so a static page shows it too;
- one function per kind of figure the labs draw; each returns the
  :class:`~matplotlib.figure.Figure` (nothing is shown until the notebook displays it).

Importing the module sets the figure style (:data:`STYLE`: fonts legible at the column
width) and, inside IPython, stores figures at twice their resolution ("retina").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
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


def use_style() -> None:
    """Apply :data:`STYLE`; inside IPython, also store inline figures at 2x resolution."""
    plt.rcParams.update(STYLE)
    from IPython import get_ipython

    if get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("retina")


use_style()


def table(rows: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | pd.DataFrame,
          formats: Mapping[str, str | Callable[[Any], str]] | None = None,
          index: str | None = None, caption: str | None = None) -> Any:
    """A table of ``rows`` with one number format per column.

    ``rows`` is a DataFrame, a list of row dicts, or a dict ``{row label: row dict}``
    (the labels become the index, named ``index``). ``formats`` maps a column to a
    format string (``"{:.1f}"``, ``"{:,}"``) or a function; other columns show as they
    are. Returns a pandas ``Styler`` (an HTML table in a notebook).
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
    styled = frame.style.format(formats)
    return styled.set_caption(caption) if caption else styled


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
        shown = draw(**{name: control.value for name, control in controls.items()})
        if isinstance(shown, Figure):
            plt.close(shown)
        return shown

    display(ipywidgets.HBox(list(controls.values())))
    handle = display(output(), display_id=True)

    def redraw(_change: Any) -> None:
        handle.update(output())

    for control in controls.values():
        control.observe(redraw, names="value")
