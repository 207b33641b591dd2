import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from labkit import measure
from labkit.models import MLP, VGG


def test_get_sparsity_counts_zeros():
    assert measure.get_sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0])) == 0.5
    assert measure.get_sparsity(torch.zeros(3)) == 1.0
    assert measure.get_sparsity(torch.empty(0)) == 0.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.5, -2.0]), min_size=1, max_size=50))
def test_get_sparsity_matches_a_count(values):
    expected = values.count(0.0) / len(values)
    assert measure.get_sparsity(torch.tensor(values)) == pytest.approx(expected)


def test_get_sparsity_rejects_non_tensors():
    with pytest.raises(TypeError, match="tensor"):
        measure.get_sparsity([0, 1])


def test_prunable_layers_and_model_sparsity():
    model = MLP(4, (3,), 2)
    layers = measure.prunable_layers(model)
    assert list(layers) == ["layers.1", "layers.3"]
    with torch.no_grad():
        layers["layers.1"].weight.zero_()
    assert measure.model_sparsity(model) == pytest.approx(12 / 18)


def test_model_without_prunable_layer_is_an_error():
    with pytest.raises(ValueError, match="no prunable layer"):
        measure.prunable_layers(nn.Sequential(nn.ReLU()))


def test_sizes_dense_nonzero_and_with_index():
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0, 2], [0, 0, 0, 3]]))
    assert measure.model_size_bits(model) == 8 * 32
    assert measure.model_size_bits(model, 8) == 8 * 8
    assert measure.model_size_bits(model, count_nonzero_only=True) == 3 * 32
    assert measure.model_size_bits(model, index="csr") == 3 * (32 + 32) + 3 * 32
    assert measure.model_size_bits(model, index="csr", index_width=8) == 3 * 40 + 3 * 8
    assert measure.model_size_bits(model, index="bitmask") == 8 + 3 * 32


def test_index_applies_to_prunable_weights_only():
    model = nn.Linear(4, 2)
    dense_bias_bits = 2 * 32
    assert measure.model_size_bits(model, index="bitmask") == 8 + 8 * 32 + dense_bias_bits


@pytest.mark.parametrize("kwargs, match", [
    ({"data_width": 0}, "data_width"),
    ({"data_width": 65}, "data_width"),
    ({"data_width": 8.0}, "data_width"),
    ({"index": "coo"}, "index must be one of"),
    ({"index": "csr", "index_width": 0}, "index_width"),
    ({"index": "csr", "count_nonzero_only": True}, "exclude each other"),
])
def test_bad_size_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        measure.model_size_bits(nn.Linear(2, 2), **kwargs)


def test_macs_of_a_linear_and_a_conv():
    assert measure.count_macs(nn.Linear(5, 3), torch.randn(2, 5)) == 2 * 5 * 3
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    assert measure.count_macs(conv, torch.randn(1, 2, 6, 6)) == 6 * 6 * 4 * 2 * 9


def test_macs_of_the_digits_vgg_are_convs_plus_head():
    model = VGG((32, 32, "M", 64, 64, "M"))
    expected = 64 * 9 * (1 * 32 + 32 * 32) + 16 * 9 * (32 * 64 + 64 * 64) + 64 * 10
    assert measure.count_macs(model, torch.randn(1, 1, 8, 8)) == expected
    assert model.training


def test_latency_reports_median_and_iqr():
    model = nn.Linear(16, 16)
    latency = measure.measure_latency(model, torch.randn(4, 16), min_run_time=0.05)
    assert latency.median_ms > 0 and latency.iqr_ms >= 0 and latency.runs >= 1
    assert latency.threads == 1
    assert "ms" in str(latency)
    assert math.isfinite(latency.median_ms)


@pytest.mark.parametrize("kwargs, match", [({"threads": 0}, "threads"),
                                           ({"min_run_time": 0}, "min_run_time")])
def test_bad_latency_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure.measure_latency(nn.Linear(2, 2), torch.randn(1, 2), **kwargs)


def test_fastest_run_rejects_bad_settings():
    with pytest.raises(ValueError, match="runs"):
        measure.fastest_run_ms(torch.nn.ReLU(), torch.zeros(1), runs=0)
    with pytest.raises(ValueError, match="threads"):
        measure.fastest_run_ms(torch.nn.ReLU(), torch.zeros(1), threads=0)


def test_time_call_times_any_call_and_counts_every_run():
    calls = []
    latency = measure.time_call(lambda: calls.append(1), min_run_time=0.01)
    assert 1 <= latency.runs <= len(calls)
    assert latency.median_ms > 0 and latency.iqr_ms >= 0 and latency.threads == 1


def test_fastest_run_times_each_run_without_gradients():
    model = nn.Linear(16, 16)
    inputs = torch.randn(4, 16)
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    fastest = measure.fastest_run_ms(model, inputs, runs=5)
    assert len(seen) >= 2 + 5 and not any(seen)
    assert 0 < fastest <= 1e3


def test_time_call_rejects_what_it_cannot_time():
    with pytest.raises(TypeError, match="call must be a function"):
        measure.time_call(3)
    with pytest.raises(ValueError, match="threads"):
        measure.time_call(lambda: None, threads=0)
    with pytest.raises(ValueError, match="min_run_time"):
        measure.time_call(lambda: None, min_run_time=float("inf"))


def test_macs_per_layer_sum_to_the_total():
    model = VGG((4, "M", 8))
    inputs = torch.randn(1, 1, 8, 8)
    per_layer = measure.macs_per_layer(model, inputs)
    assert per_layer == {"backbone.conv0": 64 * 9 * 4, "backbone.conv1": 16 * 9 * 4 * 8,
                         "classifier": 80}
    assert sum(per_layer.values()) == measure.count_macs(model, inputs)


def test_costs_measure_every_model_against_the_first():
    dense = VGG((8, "M", 16))
    small = VGG((4, "M", 8))
    frame = measure.costs({"dense": dense, "small": small}, (1, 8, 8), batch_sizes=(1, 4),
                          rounds=2, min_run_time=0.01)
    assert list(frame.index) == ["dense", "small"] and frame.index.name == "model"
    assert frame.loc["small", "params"] == measure.num_parameters(small)
    macs = [measure.count_macs(m, torch.zeros(1, 1, 8, 8)) for m in (dense, small)]
    assert frame.loc["small", "MAC reduction"] == pytest.approx(macs[0] / macs[1])
    assert frame.loc["dense", "batch 4: speed-up"] == 1.0
    assert frame.loc["small", "batch 1: speed-up"] == pytest.approx(
        frame.loc["dense", "batch 1: ms"] / frame.loc["small", "batch 1: ms"])
    assert (frame["batch 4: IQR ms"] >= 0).all()
    with pytest.raises(ValueError, match="rounds"):
        measure.costs({"dense": dense}, (1, 8, 8), rounds=0)
    with pytest.raises(ValueError, match="batch_sizes"):
        measure.costs({"dense": dense}, (1, 8, 8), batch_sizes=(0,))
