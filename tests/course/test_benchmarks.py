"""The benchmark harness runs end to end, and its results agree where they must.

The smoke preset runs every comparison on tiny models with millisecond timings through
the real entry point, ``python -m benchmarks.run``; its numbers mean nothing, but the
exact checks (identical masks, equal MACs, equal outputs) hold at any size.
"""

import json
import re
import subprocess
import sys

import nbformat
import pytest

from tests.support.paths import ROOT

COMPARISONS = ("masks", "channels", "macs", "speedup", "sparse_kernels", "labs", "llm",
               "grading")
MARKER = re.compile(r"<!-- (\w+):(start|end) -->")
INCLUDED = re.compile(r":(?:start-after|end-before): (<!-- \w+:(?:start|end) -->)")


def run_benchmarks(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run of every comparison; the labs are a one-cell notebook and a broken one."""
    pytest.importorskip("torch_pruning")
    folder = tmp_path_factory.mktemp("bench")
    notebook, broken = folder / "tiny.ipynb", folder / "broken.ipynb"
    for path, source in ((notebook, "1 + 1"), (broken, "raise ValueError('broken lab')")):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]),
                       path)
    before = notebook.read_bytes()
    completed = run_benchmarks("--smoke", "--out", str(folder / "results"), "--labs",
                               str(notebook), str(broken))
    assert completed.returncode == 0, completed.stderr
    results = {name: json.loads((folder / "results" / f"{name}.json").read_text())
               for name in COMPARISONS}
    return results, (folder / "results" / "results.md").read_text(), notebook, before


def test_every_result_records_the_machine(smoke_run):
    results, *_ = smoke_run
    for payload in results.values():
        machine = payload["machine"]
        assert machine["cores"] >= 1 and machine["threads"] == 1
        assert machine["cpu"] and machine["torch"] and machine["torch_pruning"]
        assert payload["wall_s"] > 0


def test_masks_agree_with_torch_prune_without_ties(smoke_run):
    masks = smoke_run[0]["masks"]["results"]
    assert masks["agreement"] and all(row["differing"] == 0 for row in masks["agreement"])
    for row in masks["agreement"] + masks["ties"]:
        assert row["pruned_labkit"] == row["pruned_prune"] == round(row["elements"] * 0.5)
    assert all(row["max_abs_output_difference"] == 0 for row in masks["inference"])
    checkpoints = masks["checkpoints"]
    assert checkpoints["labkit apply_masks"]["loads_strict"]
    assert not checkpoints["prune (masks attached)"]["loads_strict"]
    assert checkpoints["prune (masks attached)"]["extra_key_count"] > 0


def test_channel_pruning_matches_torch_pruning(smoke_run):
    channels = smoke_run[0]["channels"]["results"]
    for row in channels["ratios"]:
        assert row["labkit"] == row["torch_pruning_matched"]
        assert row["same_channels_max_abs_difference"] < 1e-5
        assert 0 <= row["kept_overlap"] <= 1
        assert {entry["batch"] for entry in row["latency"]} == {1, 2}


def test_mac_counts_agree_exactly(smoke_run):
    macs = smoke_run[0]["macs"]["results"]
    for row in macs["models"]:
        assert row["labkit"] == row["flop_counter"] == row["sum_of_layers"] == row["formula"]
        assert row["layers_equal_formula"] == row["layers"] and row["batch_linear"]
        assert row["torch_pruning_convs_equal"] == row["convs"]
        assert row["torch_pruning_linear_minus_labkit"] == row["linear_bias_additions"]
    sparse = macs["sparse_conv"]
    assert sparse["labkit_dense"] == sparse["flop_counter_dense"]
    assert sparse["labkit_sparse"] == sparse["flop_counter_sparse"]


def test_speedups_are_ratios_against_the_mac_limit(smoke_run):
    for row in smoke_run[0]["speedup"]["results"]["rows"]:
        assert row["speedup"] == pytest.approx(row["dense"]["median_ms"]
                                               / row["pruned"]["median_ms"])
        assert row["fraction_of_limit"] == pytest.approx(row["speedup"] / row["mac_reduction"])
        assert row["mac_reduction"] > 1


def test_sparse_kernels_compute_the_dense_results(smoke_run):
    sparse = smoke_run[0]["sparse_kernels"]["results"]
    assert all(row["max_abs_difference"] < 1e-3 for row in sparse["csr"] + sparse["conv"])
    assert set(sparse["csr_crossover"]) == {"2"}


def test_sparse_convolution_divides_the_fastest_dense_path(smoke_run):
    sparse = smoke_run[0]["sparse_kernels"]["results"]
    for row in sparse["conv"]:
        paths = row["dense"]["paths"]
        fastest = min(path["median_ms"] for path in paths.values())
        assert paths[row["dense"]["fastest"]]["median_ms"] == fastest
        assert row["speedup"] == pytest.approx(fastest / row["sparse"]["median_ms"])
        assert row["speedup_with_map"] == pytest.approx(
            fastest / row["sparse_with_map"]["median_ms"])
    for row in sparse["dense_conv"]:
        assert len(row["paths"]) == 3
        expected = "aten::mkldnn_convolution" if row["channels"] * row["grid"] ** 2 > 20480 \
            else "aten::slow_conv3d"
        assert row["conv3d_kernel"] == expected


def test_the_resnet_pruned_by_torch_pruning_is_labkits(smoke_run):
    channels = smoke_run[0]["channels"]["results"]
    assert channels["resnet"]
    for row in channels["resnet"]:
        assert row["labkit"] == row["torch_pruning"] and row["same_parameter_shapes"]
        assert row["max_abs_difference"] < 1e-5
        assert row["labkit"]["macs"] < channels["resnet_dense"]["macs"]


def test_labs_are_timed_on_a_copy_and_a_failing_lab_is_reported(smoke_run):
    results, markdown, notebook, before = smoke_run
    tiny, broken = results["labs"]["results"]["rows"]
    assert tiny["lab"] == "tiny.ipynb" and len(tiny["runs"]) == 1 and tiny["median_s"] > 0
    assert notebook.read_bytes() == before
    assert broken["lab"] == "broken.ipynb" and "broken lab" in broken["error"]
    assert "| `broken.ipynb` | failed |" in markdown


def test_results_markdown_marks_every_comparison_once(smoke_run):
    markdown = smoke_run[1]
    for name in ("machine", *COMPARISONS):
        assert markdown.count(f"<!-- {name}:start -->") == 1
        assert markdown.count(f"<!-- {name}:end -->") == 1
        assert markdown.index(f"<!-- {name}:start -->") < markdown.index(f"<!-- {name}:end -->")


def test_the_book_includes_only_markers_the_committed_results_have():
    chapter = (ROOT / "book" / "performance.md").read_text()
    committed = (ROOT / "benchmarks" / "results" / "results.md").read_text()
    included = INCLUDED.findall(chapter)
    assert included
    assert set(included) <= {marker.group(0) for marker in MARKER.finditer(committed)}


@pytest.mark.parametrize("option", ["--threads", "--labs-runs"])
def test_a_bad_option_is_refused_with_its_range(option):
    completed = run_benchmarks("--smoke", option, "0", "--only", "macs")
    assert completed.returncode == 2
    name = option.removeprefix("--").replace("-", "_")
    assert f"{name} must be a positive int, got 0" in completed.stderr


def test_the_runner_offers_every_comparison():
    from benchmarks import run

    assert run.COMPARISONS == COMPARISONS


@pytest.mark.parametrize(("options", "message"), [
    ({"grading_jobs": ()}, "grading_jobs must name at least one count, got ()"),
    ({"grading_shards": ()}, "grading_shards must name at least one count, got ()"),
    ({"grading_jobs": (0, 2)}, "grading_jobs must be a positive int, got 0"),
    ({"grading_shards": (2, 0)}, "grading_shards must be a positive int, got 0"),
])
def test_a_bad_grading_preset_is_refused(options, message):
    from benchmarks.config import Config

    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**options)


def test_the_smoke_run_grades_once_per_measured_setting_and_says_what_it_skipped(smoke_run):
    from benchmarks import grading

    results = smoke_run[0]["grading"]["results"]
    assert list(results["per_submission_s"]) == ["2"] and results["shard_jobs"] == 2
    assert [row["shards"] for row in results["shards"]] == [2]
    assert all(row["same_tables"] for row in results["shards"])
    assert results["modes_per_submission_s"] == {}
    assert "Not measured in this preset: " + ", ".join(results["runnable_modes"]) \
        in grading.markdown(results)
