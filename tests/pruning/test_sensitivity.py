import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from labkit import zoo
from labkit.measure import model_size_bits
from labkit.models import MLP, VGG
from labkit.pruning import sensitivity
from labkit.pruning.channels import channel_prune
from labkit.pruning.granularity import fine_grained_mask
from labkit.training import evaluate

GRID = (0.2, 0.5, 0.8)


def random_loader(count=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=16)


def small_vgg():
    torch.manual_seed(0)
    return VGG((4, "M", 8)).eval()


def test_scan_prunes_one_layer_at_a_time_and_leaves_the_model_untouched():
    model, loader = small_vgg(), random_loader()
    before = copy.deepcopy(model.state_dict())
    scan = sensitivity.sensitivity_scan(model, loader, sparsities=GRID, progress=False)
    assert scan.sparsities == GRID and scan.granularity == "fine-grained"
    assert list(scan.accuracies) == ["backbone.conv0", "backbone.conv1", "classifier"]
    assert scan.dense_accuracy == evaluate(model, loader)
    by_hand = copy.deepcopy(model)
    with torch.no_grad():
        weight = by_hand.backbone.conv1.weight
        weight.mul_(fine_grained_mask(weight, 0.5))
    assert scan.accuracies["backbone.conv1"][1] == evaluate(by_hand, loader)
    assert scan.curve("classifier") == ([0.0, *GRID],
                                        [scan.dense_accuracy, *scan.accuracies["classifier"]])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_scan_takes_layers_and_granularity():
    scan = sensitivity.sensitivity_scan(small_vgg(), random_loader(), sparsities=(0.5,),
                                        granularity="channel", layers=["backbone.conv1"],
                                        progress=False)
    assert list(scan.accuracies) == ["backbone.conv1"] and scan.granularity == "channel"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sparsities": ()}, "must not be empty"),
    ({"sparsities": (0.5, 1.0)}, r"numbers in \(0, 1\), got 1.0"),
    ({"sparsities": (0.0, 0.5)}, r"numbers in \(0, 1\), got 0.0"),
    ({"sparsities": (0.5, 0.2)}, "strictly increasing"),
    ({"granularity": "block"}, "granularity must be one of"),
    ({"layers": ["backbone.bn0"]}, "not prunable layers"),
])
def test_scan_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sensitivity.sensitivity_scan(small_vgg(), random_loader(), progress=False, **kwargs)


def two_layer_scan() -> tuple[MLP, sensitivity.SensitivityScan]:
    """A big insensitive layer and a small sensitive one, by construction of the curves."""
    torch.manual_seed(0)
    model = MLP(64, (64,), 4)
    scan = sensitivity.SensitivityScan(
        sparsities=(0.25, 0.5, 0.75, 0.9),
        dense_accuracy=90.0,
        accuracies={"layers.1": (89.5, 89.0, 88.0, 80.0), "layers.3": (80.0, 60.0, 40.0, 30.0)},
        granularity="fine-grained",
    )
    return model, scan


def test_allocator_prunes_the_big_insensitive_layer_first():
    model, scan = two_layer_scan()
    sparsities = sensitivity.allocate_sparsities(model, scan, budget=0.55)
    assert sparsities == {"layers.1": 0.5, "layers.3": 0.0}
    assert sensitivity.size_fraction(model, sparsities) <= 0.55


@settings(max_examples=15, deadline=None)
@given(st.floats(0.2, 1.0), st.sampled_from([None, "bitmask", "csr"]), st.sampled_from([32, 8]))
def test_allocator_meets_every_reachable_budget(budget, index, data_width):
    model, scan = two_layer_scan()
    try:
        sparsities = sensitivity.allocate_sparsities(model, scan, budget, index=index,
                                                     data_width=data_width)
    except ValueError as error:
        assert "out of reach" in str(error)
        return
    assert set(sparsities.values()) <= {0.0, *scan.sparsities}
    fraction = sensitivity.size_fraction(model, sparsities, index=index, data_width=data_width)
    assert fraction <= budget


def test_index_overhead_asks_for_more_sparsity():
    model, scan = two_layer_scan()
    plain = sensitivity.allocate_sparsities(model, scan, 0.5)
    with_csr = sensitivity.allocate_sparsities(model, scan, 0.5, index="csr")
    assert with_csr["layers.1"] > plain["layers.1"]


def test_allocator_rejects_bad_budgets():
    model, scan = two_layer_scan()
    for budget in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"budget must be a finite number in \(0, 1\]"):
            sensitivity.allocate_sparsities(model, scan, budget)
    with pytest.raises(TypeError, match="budget must be a real number, got bool"):
        sensitivity.allocate_sparsities(model, scan, True)
    with pytest.raises(ValueError, match="out of reach"):
        sensitivity.allocate_sparsities(model, scan, 0.05)


def test_greedy_allocation_takes_the_cheapest_loss_per_unit_with_a_joint_cost():
    accuracy = {"a": [90.0, 89.0, 80.0], "b": [90.0, 88.0, 87.0]}

    def cost(steps):  # b's steps also shrink a's cost, as a channel cut shrinks the next layer
        return 120 - 30 * steps["a"] - 10 * steps["b"] - 5 * steps["a"] * steps["b"]

    # step 1: a loses 1.0 for 30 saved, b 2.0 for 10 -> a; cost 90
    # step 2: a loses 9.0 for 30 saved, b 2.0 for 15 -> b; cost 75
    assert sensitivity.greedy_allocation(accuracy, cost, 80) == {"a": 1, "b": 1}
    assert sensitivity.greedy_allocation(accuracy, cost, 120) == {"a": 0, "b": 0}
    with pytest.raises(ValueError, match="budget 5 is out of reach: with every layer at its "
                                         "last step the cost is 20"):
        sensitivity.greedy_allocation(accuracy, cost, 5)
    with pytest.raises(ValueError, match=r"budget must be a finite number in \[0, inf\]"):
        sensitivity.greedy_allocation(accuracy, cost, float("nan"))
    with pytest.raises(ValueError, match="accuracy\\['a'\\] is empty"):
        sensitivity.greedy_allocation({"a": []}, cost, 5)


def test_uniform_sparsity_is_the_smallest_that_fits():
    model, _ = two_layer_scan()
    sparsity = sensitivity.uniform_sparsity_for_budget(model, 0.3, tolerance=1e-3)
    names = ["layers.1", "layers.3"]
    assert sensitivity.size_fraction(model, dict.fromkeys(names, sparsity)) <= 0.3
    assert sensitivity.size_fraction(model, dict.fromkeys(names, sparsity - 2e-3)) > 0.3
    assert sensitivity.uniform_sparsity_for_budget(model, 1.0) == 0.0
    bits = model_size_bits(model)
    assert sensitivity.size_fraction(model, dict.fromkeys(names, 0.0)) * bits == bits


def test_allocator_beats_uniform_on_a_trained_model_before_finetuning(digits):
    model = zoo.pretrained("mlp-digits", progress=False)
    _, val_loader, _ = digits.loaders()
    scan = sensitivity.sensitivity_scan(model, val_loader, sparsities=(0.1, 0.3, 0.5, 0.7, 0.9),
                                        progress=False)
    allocated = sensitivity.allocate_sparsities(model, scan, 0.25)
    uniform = sensitivity.uniform_sparsity_for_budget(model, 0.25)
    same_everywhere = dict.fromkeys(allocated, uniform)
    assert sensitivity.size_fraction(model, allocated) <= 0.25
    assert sensitivity.size_fraction(model, same_everywhere) <= 0.25
    assert evaluate(sensitivity.pruned_model(model, allocated), val_loader) > evaluate(
        sensitivity.pruned_model(model, same_everywhere), val_loader)


def test_channel_ratio_scan_prunes_one_conv_at_a_time():
    model, loader = small_vgg(), random_loader()
    before = copy.deepcopy(model.state_dict())
    scan = sensitivity.channel_ratio_scan(model, loader, [0.0, 0.5])
    assert list(scan) == [0, 1] and all(len(curve) == 2 for curve in scan.values())
    dense = evaluate(model, loader)
    assert scan[0][0] == scan[1][0] == dense
    pruned = channel_prune(model, [0.0, 0.5])
    assert scan[1][1] == evaluate(pruned, loader)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    with pytest.raises(ValueError, match="ratios"):
        sensitivity.channel_ratio_scan(model, loader, [1.0])
