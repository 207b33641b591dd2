"""labkit.viz: tables with a format per column, figures shown once, controls that redraw."""

import matplotlib.pyplot as plt
import pytest
import torch
from ipywidgets import Dropdown, FloatSlider
from matplotlib.figure import Figure

from labkit import viz
from labkit.measure import Latency


def test_table_formats_each_column_and_float_labels():
    html = viz.table({0.3: {"params": 12345, "accuracy": 0.5},
                      0.5: {"params": 678, "accuracy": 0.25}},
                     {"params": "{:,}", "accuracy": "{:.1%}"}, index="ratio",
                     caption="a caption").to_html()
    for text in ("12,345", "50.0%", "25.0%", ">0.3<", "ratio", "a caption"):
        assert text in html
    assert "0.300000" not in html


def test_table_takes_a_list_of_rows():
    assert "7.00" in viz.table([{"a": 7.0}], {"a": "{:.2f}"}).to_html()


def test_table_refuses_unknown_columns_and_other_rows():
    with pytest.raises(ValueError, match=r"formats names columns \['b'\]"):
        viz.table([{"a": 1}], {"b": "{:.1f}"})
    with pytest.raises(TypeError, match="rows must be"):
        viz.table(42)


def test_figures_are_not_kept_by_pyplot():
    plt.close("all")
    weight = torch.randn(4, 4, 3, 3)
    figures = [
        viz.image_grid(torch.rand(6, 1, 8, 8), list(range(6)), rows=2, cols=3, title="t"),
        viz.bars({"a": {"x": 1.0, "y": 2.0}, "b": torch.tensor([3.0, 1.0, 2.0])}, sort=True),
        viz.histograms({"w": weight}),
        viz.histogram_overlay({"a": torch.rand(10), "b": torch.rand(10)}, xlabel="x"),
        viz.scatter_against(torch.rand(20), {"e": torch.rand(20)}, xlabel="x"),
        viz.curves({"a": ([0, 1], [1.0, 2.0])}, "x", "y", logy=True, spread={"a": [0.1, 0.1]}),
        viz.kernel_masks(weight, {"half": weight.abs() > weight.abs().median()}),
    ]
    assert all(isinstance(figure, Figure) for figure in figures)
    assert plt.get_fignums() == []
    assert len(figures[1].axes) == 2


def test_figure_arguments_are_checked():
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, H, W\)"):
        viz.image_grid(torch.rand(6, 8, 8), list(range(6)), rows=2, cols=3)
    with pytest.raises(ValueError, match="mask of its shape"):
        viz.kernel_masks(torch.randn(4, 4, 3, 3), {"bad": torch.ones(4, 4, dtype=torch.bool)})


def test_cost_table_compares_every_row_with_the_first():
    def latency(ms):
        return Latency(median_ms=ms, iqr_ms=0.1, runs=10, threads=1)

    html = viz.cost_table({"dense": {"params": 100, "MACs": 4000, "batch 1": latency(2.0)},
                           "pruned": {"params": 25, "MACs": 1000, "batch 1": latency(1.0)}}
                          ).to_html()
    for text in ("4.00x", "2.00x", "batch 1: speed-up", "MAC reduction", "4,000"):
        assert text in html
    with pytest.raises(ValueError, match="at least one row"):
        viz.cost_table({})


def test_interactive_draws_at_the_defaults_and_redraws_on_change(monkeypatch):
    shown, drawn = [], []
    monkeypatch.setattr("IPython.display.display", lambda *objects, **options: shown.append(
        (objects, options)) or DisplayHandle())

    class DisplayHandle:
        def update(self, value):
            shown.append(((value,), {"update": True}))

    slider = FloatSlider(value=0.5, min=0.0, max=1.0)
    menu = Dropdown(options=["a", "b"], value="a")
    viz.interactive(lambda sparsity, kind: drawn.append((sparsity, kind)) or f"{kind}{sparsity}",
                    sparsity=slider, kind=menu)
    assert drawn == [(0.5, "a")]
    assert shown[1][0] == ("a0.5",) and shown[1][1] == {"display_id": True}
    slider.value = 0.25
    assert drawn[-1] == (0.25, "a") and shown[-1] == (("a0.25",), {"update": True})


def test_interactive_refuses_what_is_not_a_control():
    with pytest.raises(ValueError, match="at least one control"):
        viz.interactive(lambda: None)
    with pytest.raises(TypeError, match="control 'sparsity' must be an ipywidgets control"):
        viz.interactive(lambda sparsity: None, sparsity=0.5)
