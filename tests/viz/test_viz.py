"""labkit.viz: tables with a format per column, figures shown once, controls that redraw."""

import io
import itertools
import re

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from ipywidgets import Dropdown, FloatSlider
from matplotlib.figure import Figure
from matplotlib.text import Text

from labkit import viz
from labkit.measure import Latency, cost_frame, count_macs
from labkit.search.comparison import compare_networks
from labkit.search.netadapt import family_frame
from labkit.viz.generic import RELOAD_NOTE


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


def _generic_figures() -> list[Figure]:
    weight = torch.randn(4, 4, 3, 3)
    return [
        viz.image_grid(torch.rand(6, 1, 8, 8), list(range(6)), rows=2, cols=3, title="t"),
        viz.bars({"a": {"x": 1.0, "y": 2.0}, "b": torch.tensor([3.0, 1.0, 2.0])}, sort=True),
        viz.histograms({"w": weight}),
        viz.histogram_overlay({"a": torch.rand(10), "b": torch.rand(10)}, xlabel="x"),
        viz.scatter_against(torch.rand(20), {"e": torch.rand(20)}, xlabel="x"),
        viz.curves({"a": ([0, 1], [1.0, 2.0])}, "x", "y", logy=True, spread={"a": [0.1, 0.1]}),
        viz.kernel_masks(weight, {"half": weight.abs() > weight.abs().median()}),
    ]


def test_figures_are_not_kept_by_pyplot():
    plt.close("all")
    figures = _generic_figures()
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

    html = viz.cost_table(cost_frame({
        "dense": {"params": 100, "MACs": 4000, "batch 1": latency(2.0)},
        "pruned": {"params": 25, "MACs": 1000, "batch 1": latency(1.0)}})).to_html()
    for text in ("4.00x", "2.00x", "batch 1: speed-up", "MAC reduction", "4,000"):
        assert text in html
    with pytest.raises(ValueError, match="at least one row"):
        cost_frame({})


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


def test_interactive_prints_its_reload_note_between_the_controls_and_the_output(
        monkeypatch, capsys):
    """The note is printed, not part of a widget: the executed notebook keeps it when the
    widget views are dropped, so a page opened without a kernel shows it, and the book
    does not take it into the output's figure."""
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objects, **options: shown.append(
        (objects[0], capsys.readouterr().out)))
    slider = FloatSlider(value=0.5, min=0.0, max=1.0)
    viz.interactive(lambda sparsity: sparsity, sparsity=slider)
    (controls, before), (output, printed) = shown
    assert list(controls.children) == [slider] and before == ""
    assert output == 0.5 and printed == viz.wrap(RELOAD_NOTE) + "\n"
    assert max(len(line) for line in printed.splitlines()) <= 88
    assert "after reloading the page, run the cell again" in RELOAD_NOTE


def test_interactive_refuses_what_is_not_a_control():
    with pytest.raises(ValueError, match="at least one control"):
        viz.interactive(lambda: None)
    with pytest.raises(TypeError, match="control 'sparsity' must be an ipywidgets control"):
        viz.interactive(lambda sparsity: None, sparsity=0.5)


def test_table_shows_missing_values_as_asked():
    html = viz.table({"dense": {"a": 1.0}, "pruned": {"a": 0.5, "b": 0.25}},
                     {"a": "{:.2f}", "b": "{:.2f}"}, missing="-").to_html()
    assert "nan" not in html and ">-<" in html and "0.25" in html


def _lab_figures() -> list[Figure]:
    from labkit.hardware import nm

    small = nm.prune_2_4(torch.arange(1.0, 33.0).reshape(4, 8))
    compressed = nm.compress_2_4(small)
    return [
        viz.search_history([50.0, 60.0, 55.0, 70.0], warmup=2, baseline=58.0,
                           baseline_label="uniform", window=2),
        viz.grouped_bars({"a": [0.1, 0.2], "b": [0.3, 0.4]}, ["conv0", "conv1"], "ratio"),
        viz.agp_schedule(5, 0.8),
        viz.learning_curves({"80%": {"ticket": [50.0, 90.0], "re-init": [10.0, 80.0]}},
                            "epoch", "accuracy", baseline=99.0, baseline_label="dense"),
        viz.pe_interleave(torch.eye(8) * 3, 4),
        viz.pe_load_balance(pd.DataFrame(
            {"cycles": [10, 6], "perfect balance": [8.0, 4.0],
             "work per PE": [[8], [5, 3]]}, index=pd.Index([1, 2], name="PEs N")), 2),
        viz.layout_24(small, compressed.values, nm.unpack_positions(compressed.metadata, 4),
                      compressed.metadata),
        viz.point_cloud_voxels(torch.rand(20, 3), torch.rand(3, 3, 2) > 0.5, "points",
                               "voxels"),
    ]


def test_search_schedule_and_hardware_figures_are_not_kept_by_pyplot():
    plt.close("all")
    figures = _lab_figures()
    assert all(isinstance(fig, Figure) for fig in figures)
    assert plt.get_fignums() == []


@pytest.mark.parametrize("draw", [_generic_figures, _lab_figures])
def test_figures_draw_no_text_smaller_than_the_styles_smallest_size(draw):
    """The book measures a lab figure's text from this size (browser_tests), as the
    stored image does not say what it holds."""
    smallest = viz.SMALLEST_FONT_PT
    for figure in draw():
        figure.draw_without_rendering()
        sizes = [text.get_fontsize() for text in figure.findobj(Text)
                 if text.get_visible() and text.get_text()]
        assert min(sizes) >= smallest, figure.axes[0].get_title()


def test_agp_figure_removes_a_shrinking_share_late_in_the_cubic_schedule():
    cubic, linear = (line.get_ydata() for line in viz.agp_schedule(10, 0.9).axes[1].lines)
    assert all(later < earlier for earlier, later in itertools.pairwise(cubic[4:]))
    assert all(later > earlier for earlier, later in itertools.pairwise(linear))


def test_search_and_grouped_figures_check_their_arguments():
    with pytest.raises(ValueError, match=r"window must be in \[1, 3\]"):
        viz.search_history([1.0, 2.0, 3.0], warmup=1, baseline=1.0, baseline_label="b",
                           window=5)
    with pytest.raises(ValueError, match="group 'a' has 1 values for 2 categories"):
        viz.grouped_bars({"a": [0.1]}, ["x", "y"], "ratio")
    with pytest.raises(ValueError, match="matrix must be 2-d"):
        viz.pe_interleave(torch.ones(2, 2, 2), 2)
    with pytest.raises(ValueError, match="at least one network"):
        compare_networks({}, torch.zeros(1), torch.zeros(1), None, None)


def test_seed_table_shows_mean_range_and_each_seed():
    html = viz.seed_table({"a": [90.0, 92.0, 94.0], "b": [80.0]}, "val (%)", index="method",
                          extra={"MACs": {"a": 0.5}}, formats={"MACs": "{:.3f}"}).to_html()
    for text in ("92.00", "4.00", "90.0 / 92.0 / 94.0", "80.00", "0.00", "0.500", "val (%), mean"):
        assert text in html
    with pytest.raises(ValueError, match="at least one value per method"):
        viz.seed_table({"a": []}, "val (%)", index="method")


def test_curves_mark_thresholds_and_bands():
    fig = viz.curves({"a": ([0, 1], [2, 3])}, "x", "y", hline=2.5, vline=0.5, hspan=(2.0, 2.2))
    ax = fig.axes[0]
    assert [tuple(line.get_ydata()) for line in ax.lines[1:2]] == [(2.5, 2.5)]
    assert [tuple(line.get_xdata()) for line in ax.lines[2:3]] == [(0.5, 0.5)]
    assert len(ax.patches) == 1


def llm_ranges(values: dict[tuple[str, str], tuple[float, float]]) -> pd.DataFrame:
    """A table like labkit.pruning.llm.ranges: ``{(target, criterion): (min, max)}``."""
    index = pd.MultiIndex.from_tuples(list(values), names=["target", "criterion"])
    return pd.DataFrame([{"validation min": low, "validation max": high}
                         for low, high in values.values()], index=index)


def test_perplexity_bands_draw_the_middle_of_each_range_against_sparsity():
    ranges = llm_ranges({("50%", "a"): (6.0, 8.0), ("50%", "b"): (5.0, 5.0),
                         ("30%", "a"): (4.0, 4.0), ("30%", "b"): (3.0, 5.0),
                         ("2:4", "a"): (9.0, 9.0), ("2:4", "b"): (9.0, 9.0)})
    ax = viz.perplexity_bands(ranges, dense=3.5).axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b", "dense"]
    assert list(ax.lines[0].get_xdata()) == [30.0, 50.0]
    assert list(ax.lines[0].get_ydata()) == [4.0, 7.0]
    assert list(ax.lines[1].get_ydata()) == [4.0, 5.0]
    assert tuple(ax.lines[2].get_ydata()) == (3.5, 3.5)
    assert ax.get_ylabel() == "validation perplexity" and len(ax.collections) == 2
    with pytest.raises(ValueError, match="split must name a split of the ranges, got 'test'"):
        viz.perplexity_bands(ranges, "test")
    with pytest.raises(ValueError, match=r"ranges must hold a sparsity target, got \['2:4'\]"):
        viz.perplexity_bands(llm_ranges({("2:4", "a"): (9.0, 9.0)}))
    with pytest.raises(ValueError, match="indexed by target and criterion"):
        viz.perplexity_bands(ranges.reset_index("target"))


def test_layer_error_bars_draw_a_bar_per_layer_and_criterion_at_one_target():
    columns = pd.MultiIndex.from_tuples([("50%", "a"), ("50%", "b"), ("2:4", "a")],
                                        names=["target", "criterion"])
    errors = pd.DataFrame([[1.0, 2.0, 3.0], [0.5, 0.25, 4.0]], columns=columns,
                          index=pd.Index(["blocks.0.fc", "blocks.1.fc"], name="layer"))
    ax = viz.layer_error_bars(errors[["50%"]]).axes[0]
    assert [patch.get_height() for patch in ax.patches] == [1.0, 0.5, 2.0, 0.25]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["0.fc", "1.fc"]
    assert ax.get_title() == "at 50%" and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match=r"errors must hold one target, got \['50%', '2:4'\]"):
        viz.layer_error_bars(errors)


def test_input_norms_on_a_log_or_a_linear_scale():
    norms = {"blocks.0.fc": torch.rand(8) + 0.1}
    assert viz.input_norms(norms, tokens=10).axes[0].get_yscale() == "log"
    assert viz.input_norms(norms, tokens=10, log=False).axes[0].get_yscale() == "linear"


def test_scene_views_format_the_benchmark_and_draw_sparse_against_dense():
    from labkit.hardware.sparseconv import SceneBenchmark
    from labkit.measure import Latency

    scenes = pd.DataFrame({"occupancy": [0.0102, 0.2018], "voxels": [2198, 43583],
                           "fewer MACs": [923.1, 12.0], "sparse ms": [2.05, 111.65],
                           "sparse IQR": [0.72, 15.29], "sparse runs": [470, 10],
                           "kernel map ms": [12.19, 219.31], "speed-up": [35.3, 0.6],
                           "speed-up with map": [5.1, 0.2]},
                          index=pd.Index(["about 1%", "about 20%"], name="scene"))
    html = viz.scene_table(scenes, caption="one thread").to_html()
    for text in ("1.02%", "43,583", "923.1x", "111.65", "0.6x", "one thread"):
        assert text in html
    ax = viz.scene_timings(SceneBenchmark(scenes, Latency(72.4, 9.3, 42, 1), (60, 60, 60)),
                           "a title").axes[0]
    assert [patch.get_height() for patch in ax.patches] == [2.05, 111.65, 72.4, 72.4]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["1.0% occupied",
                                                                   "20.2% occupied"]
    assert ax.get_title() == "a title" and ax.get_yscale() == "log"
    with pytest.raises(TypeError, match="bench must be a SceneBenchmark"):
        viz.scene_timings(scenes)
    with pytest.raises(ValueError, match="formats names columns"):
        viz.scene_table(scenes.drop(columns=["voxels"]))


def test_eie_views_show_the_codebook_the_storage_and_the_load_balance():
    weight = torch.tensor([[0.0, 0.5, -0.5], [0.25, 0.0, 0.0]])
    ax = viz.codebook_histogram(weight, torch.tensor([0.0, -0.5, 0.4]), "conv9").axes[0]
    assert ax.get_title() == "conv9's surviving weights (blue) and the 2 shared values (red)"
    assert [line.get_xdata()[0] for line in ax.lines] == pytest.approx([-0.5, 0.4])
    assert sum(patch.get_height() > 0 for patch in ax.patches) == 3
    with pytest.raises(ValueError, match=r"codebook must be 1-d .* got shape \(1,\)"):
        viz.codebook_histogram(weight, torch.tensor([0.0]), "conv9")
    storage = pd.DataFrame({"bits": [1000, 400], "vs dense": [1.0, 2.5],
                            "entries": [None, 42.0], "padding": [None, 3.0],
                            "pointer bits": [None, 160.0], "pointer share": [None, 0.4]},
                           index=pd.Index(["dense, 32-bit", "EIE, 1 PE"], name="format"))
    html = viz.eie_storage_table(storage, caption="a layer").to_html()
    for text in ("1,000", "2.50x", "42", "40%", "a layer"):
        assert text in html
    assert "nan" not in html
    balance = pd.DataFrame({"cycles": [1200, 700], "perfect balance": [1200.0, 600.0],
                            "lock-step efficiency": [1.0, 0.857], "mean/max work": [1.0, 0.9],
                            "work per PE": [[1200], [650, 550]]},
                           index=pd.Index([1, 2], name="PEs N"))
    html = viz.load_balance_table(balance).to_html()
    for text in ("1,200", "600", "86%", "90%"):
        assert text in html
    assert "650" not in html


class _Family:
    def __init__(self, model, widths, ms, val, candidates=()):
        self.model, self.widths, self.latency_ms, self.constraint_ms = model, widths, ms, ms
        self.val_accuracy, self.candidates = val, candidates


def test_netadapt_family_and_network_table_compare_with_the_first_network():
    from labkit.models import VGG
    from labkit.pruning.channels import channel_prune

    dense = VGG([4, "M", 8, "M"], in_channels=1, num_classes=3)
    small = channel_prune(dense, 0.5)
    example = torch.zeros(1, 1, 8, 8)
    html = viz.netadapt_family(family_frame(
        [_Family(dense, (4, 8), 2.0, 90.0),
         _Family(small, (2, 4), 1.0, 80.0, (("backbone.conv1", 4, 80.0),))], example)).to_html()
    fraction = count_macs(small, example) / count_macs(dense, example)
    assert fraction < 0.5
    assert "1.000" in html and f"{fraction:.3f}" in html and "conv1->4: 80.0" in html
    loader = [(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))]
    tuned = []

    def ruin(network):  # a "finetune" that changes every weight of what it is given
        tuned.append(network)
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(1.0)

    before = [p.clone() for p in small.parameters()]
    frame = viz.network_table(compare_networks({"dense": dense, "small": small}, example,
                                               example, loader, loader, finetune=ruin)).data
    assert len(tuned) == 1 and tuned[0] is not small
    assert all(torch.equal(a, b) for a, b in zip(before, small.parameters(), strict=True))
    assert all(torch.equal(a + 1.0, b) for a, b in zip(before, tuned[0].parameters(),
                                                       strict=True))
    assert frame["val, finetuned (%)"].isna().tolist() == [True, False]
    with pytest.raises(ValueError, match="at least one step"):
        family_frame([], example)


def test_steps_table_staircase_and_lottery_table():
    from labkit.pruning.schedule import LotteryResult, Step

    steps = [Step(0.5, 80.0, 95.0), Step(0.75, 70.0, 90.0)]
    html = viz.steps_table(steps, "tuned (%)", "pruned (%)", index="s").to_html()
    assert html.index("pruned (%)") < html.index("tuned (%)")
    assert all(text in html for text in ("80.0", "95.0", "70.0", "0.75"))
    assert "pruned" not in viz.steps_table(steps, "tuned (%)").to_html()
    line = viz.prune_finetune_staircase(steps, 99.0).axes[0].lines[0]
    assert list(line.get_xdata()) == [0.0, 0.5, 0.5, 0.75, 0.75]
    assert list(line.get_ydata()) == [99.0, 80.0, 95.0, 70.0, 90.0]
    result = LotteryResult(0.8, None, None, [10.0, 20.0, 30.0, 25.0], [5.0, 6.0, 7.0, 8.0],
                           41.0, 42.0)
    frame = viz.lottery_table({0.8: result}, 0.01).data
    assert frame.loc[("80%", "ticket")].tolist() == [10.0, 20.0, 30.0, 30.0, 41.0]
    assert frame.loc[("80%", "re-init")].tolist() == [5.0, 6.0, 7.0, 8.0, 42.0]


def test_lab_06_views_of_the_steps_the_methods_and_the_lottery():
    from labkit.pruning.schedule import LotteryResult, Step, steps_frame

    steps = [Step(0.5, 80.0, 95.0), Step(0.75, 70.0, 90.0)]
    html = viz.steps_frame_table(steps_frame(steps)).to_html()
    for text in ("50%", "80.0", "95.0", "0.75", "sparsity"):
        assert text in html
    ax = viz.accuracy_against_sparsity({"a": steps, "b": steps[:1]}, 99.0).axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert list(ax.lines[0].get_ydata()) == [95.0, 90.0] and len(ax.patches) == 1
    result = LotteryResult(0.8, None, None, [10.0, 20.0], [5.0, 6.0])
    figure = viz.lottery_curves({0.8: result, 0.9: result}, 99.0)
    assert [ax.get_title() for ax in figure.axes] == ["80% sparsity", "90% sparsity"]
    assert [line.get_label() for line in figure.axes[0].lines] == [
        "winning ticket (rewound)", "random re-initialisation", "dense"]
    assert list(figure.axes[0].lines[1].get_ydata()) == [5.0, 6.0]
    with pytest.raises(ValueError, match="methods must name at least one method"):
        viz.accuracy_against_sparsity({}, 99.0)
    with pytest.raises(ValueError, match="results must hold at least one sparsity"):
        viz.lottery_curves({}, 99.0)


def test_tables_pad_cells_right_align_numbers_and_keep_headers_on_one_line():
    styled = viz.table({"a": {"accuracy, finetuned (%)": 91.5, "count": 3, "name": "x"}},
                       {"accuracy, finetuned (%)": "{:.1f}"})
    css = styled.to_html().split("</style>")[0]
    assert re.search(r" th, td|th \{\s*padding: 0.3em 0.75em", css)
    assert re.search(r"th \{\s*white-space: nowrap;", css)
    cells, rule = css.rsplit("{", 1)
    assert "text-align: right;" in rule
    assert sorted(re.findall(r"_row0_col(\d)", cells)) == ["0", "1"]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_multi_panel_figures_wrap_to_two_panels_a_row_within_the_column(count):
    """The book's column is about 700 px: at 100 dpi a figure at most 6.8 inches wide (7
    with the tight bounding box's padding) shows unscaled, so its 9 pt tick labels stay
    legible."""
    panels = {f"layer {k}": torch.rand(16) + 0.1 for k in range(count)}
    for figure in (viz.bars(panels, ylabel="y"), viz.histograms(panels),
                   viz.scatter_against(torch.rand(16), panels, xlabel="x"),
                   viz.input_norms(panels, tokens=100),
                   viz.learning_curves({k: {"a": [1.0, 2.0]} for k in panels}, "e", "y")):
        assert figure.get_figwidth() <= viz.COLUMN_INCHES
        assert len(figure.axes) == count
        columns = {round(ax.get_position().x0, 3) for ax in figure.axes}
        rows = {round(ax.get_position().y0, 3) for ax in figure.axes}
        assert len(columns) == min(count, 2) and len(rows) == (count + 1) // 2
        labelled = [ax for ax in figure.axes if ax.get_ylabel()]
        assert len(labelled) == len(rows)


def test_wide_figures_fit_the_column():
    weight = torch.randn(8, 16, 3, 3)
    figures = [viz.image_grid(torch.rand(12, 1, 8, 8), list(range(12)), rows=1, cols=12),
               viz.kernel_masks(weight, {"all": weight != 0}),
               viz.point_cloud_voxels(torch.rand(20, 3), torch.rand(3, 3, 2) > 0.5, "p", "v")]
    assert all(figure.get_figwidth() <= viz.COLUMN_INCHES for figure in figures)


def _input_norms_of_three_layers():
    return viz.input_norms({f"blocks.{k}.mlp.fc": torch.rand(96) + 0.1 for k in range(3)},
                           tokens=2048)


def _estimates_with_long_names():
    exact = torch.rand(200) * 1e-3
    return viz.scatter_against(exact, {"Hutchinson, 16 samples": exact + 1e-4,
                                       "Hutchinson, 256 samples": exact * 1.01,
                                       "Fisher": exact * 0.5}, xlabel="exact $h_{ii}$")


@pytest.mark.parametrize("draw", [_input_norms_of_three_layers, _estimates_with_long_names])
def test_a_wrapped_figure_stored_as_the_notebook_stores_it_is_at_most_700_px_wide(draw):
    """Stored with the inline backend's tight bounding box, which also takes in text
    that reaches past the figure's edge (a title wider than its panel)."""
    figure = draw()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    width = int.from_bytes(buffer.getvalue()[16:20], "big")
    assert 600 < width <= 700


@given(st.lists(st.text(alphabet="ab(),= ", min_size=0, max_size=40), max_size=6),
       st.integers(min_value=0, max_value=12), st.integers(min_value=20, max_value=60))
@example([" ===", "===="], 12, 20)
def test_wrap_keeps_every_word_and_fits_lines_of_short_words(words, indent, width):
    text = " " * indent + " ".join(words)
    wrapped = viz.wrap(text + "\n" + text, width)
    assert wrapped.split() == (text + " " + text).split()
    continuation = len(text) - len(text.lstrip()) + 4
    assert all(len(line) <= width for line in wrapped.splitlines()
               if all(len(word) <= width - continuation for word in line.split()))


def test_wrap_indents_continuations_and_refuses_a_narrow_width():
    line = "  (bn0): BatchNorm2d(32, eps=1e-05, momentum=0.1, affine=True, bias=True, " \
           "track_running_stats=True)"
    first, second = viz.wrap(line).splitlines()
    assert first.startswith("  (bn0)") and second.startswith("      track_running_stats")
    assert max(map(len, (first, second))) <= 88
    assert viz.wrap("short") == "short"
    with pytest.raises(ValueError, match="width must be at least 20 characters, got 5"):
        viz.wrap("text", 5)


def test_lab05_views_draw_what_comparison_computed():
    html = viz.layer_macs({"backbone.conv0": 1234, "classifier": 56}).to_html()
    assert "1,234" in html and "classifier" in html
    fig = viz.channel_sensitivity([0.0, 0.5], {0: [90.0, 70.0], 1: [90.0, 80.0]},
                                  ["backbone.conv0", "backbone.conv1"])
    assert [line.get_label() for line in fig.axes[0].lines] == ["conv0", "conv1"]
    assert list(fig.axes[0].lines[1].get_ydata()) == [90.0, 80.0]
    with pytest.raises(ValueError, match="convs must name each of the scan's 2 convs"):
        viz.channel_sensitivity([0.0, 0.5], {0: [90.0, 70.0], 1: [90.0, 80.0]}, ["a"])
    policies = pd.DataFrame(
        {"val (%)": [95.0, 90.0, 94.0], "MACs": [0.49, 0.5, 0.47]},
        index=pd.MultiIndex.from_tuples([("rule", 0), ("search", 0), ("search", 1)],
                                        names=["policy", "run"]))
    styled = viz.policy_table(policies)
    assert list(styled.data.index) == ["rule", "search"]
    assert styled.data.loc["search", "val (%), mean"] == 92.0
    assert styled.data.loc["search", "range"] == 4.0
    assert styled.data.loc["search", "MACs, most"] == 0.5
    assert "90.0 / 94.0" in styled.to_html()
    costs = pd.DataFrame({"channels": [8], "MACs of one channel": [12345],
                          "val (%), pruned alone by 0.5": [87.25]},
                         index=pd.Index(["backbone.conv0"], name="conv"))
    html = viz.channel_cost_table(costs).to_html()
    assert "12,345" in html and "87.2" in html and "87.25" not in html


def test_netadapt_curve_marks_the_latency_budget():
    family = [_Family(None, (4, 8), 2.0, 90.0), _Family(None, (2, 4), 1.0, 80.0)]
    ax = viz.netadapt_curve(family, 0.5).axes[0]
    assert list(ax.lines[0].get_xdata()) == [2.0, 1.0]
    assert list(ax.lines[0].get_ydata()) == [90.0, 80.0]
    assert tuple(ax.lines[1].get_xdata()) == (1.0, 1.0)
    with pytest.raises(ValueError, match="at least one step"):
        viz.netadapt_curve([], 0.5)


def test_lab03_views_draw_apoz_selection_accuracy_and_reconstruction_errors():
    fig = viz.apoz_bars({"backbone.relu0": torch.tensor([0.1, 0.7, 0.4]),
                         "backbone.relu1": torch.tensor([0.2, 0.3])})
    assert [ax.get_title() for ax in fig.axes] == ["relu0", "relu1"]
    assert [bar.get_height() for bar in fig.axes[0].patches] == pytest.approx([0.7, 0.4, 0.1])
    accuracy = pd.DataFrame({"first channels": [91.234], "lowest APoZ": [80.0]},
                            index=pd.Index([0.3], name="prune ratio"))
    html = viz.selection_accuracy_table(accuracy).to_html()
    assert "91.23%" in html and "80.00%" in html and "no finetuning" in html
    errors = pd.DataFrame({"magnitude": [0.5, 0.2], "LASSO + LS": [0.1, 0.05]},
                          index=pd.Index([4, 8], name="channels kept"))
    ax = viz.reconstruction_errors(errors, "conv1", "conv2", 32).axes[0]
    assert ax.get_xlabel() == "channels of conv1 kept (of 32)" and ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == ["magnitude", "LASSO + LS"]
    assert list(ax.lines[1].get_ydata()) == [0.1, 0.05]


def test_lab02_views_draw_accuracy_by_sparsity():
    accuracy = pd.DataFrame({0.6: [97.84, 50.0], 0.7: [79.3, 13.0]},
                            index=pd.Index(["OBD", "random"], name="criterion"))
    ax = viz.sparsity_curves(accuracy, "sparsity", "criteria").axes[0]
    assert [line.get_label() for line in ax.lines] == ["OBD", "random"]
    assert list(ax.lines[0].get_xdata()) == [0.6, 0.7]
    assert list(ax.lines[1].get_ydata()) == [50.0, 13.0]
    assert ax.get_title() == "criteria" and ax.get_ylabel() == "validation accuracy (%)"
    styled = viz.sparsity_table(accuracy, "accuracy (%)")
    assert list(styled.data.columns) == ["60%", "70%"]
    html = styled.to_html()
    assert "97.8" in html and "97.84" not in html and "criterion" in html
