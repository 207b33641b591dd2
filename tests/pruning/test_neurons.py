import copy
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit.grading import checks
from labkit.models import VGG
from labkit.pruning import neurons

# The lecture's APoZ example: ReLU outputs of 2 images x 3 channels x 4 x 4. Channel 0
# has 5 + 6 = 11 zeros of 32 entries, channel 1 has 6 + 6 = 12 and channel 2 has 7 + 7 = 14.
LECTURE_ACTIVATIONS = torch.tensor([
    [
        [[0, 1, 0, 2], [3, 0, 4, 1], [0, 2, 5, 3], [1, 0, 3, 2]],
        [[2, 0, 0, 1], [0, 3, 1, 0], [4, 0, 2, 1], [0, 1, 3, 2]],
        [[0, 0, 1, 0], [2, 0, 3, 1], [0, 4, 0, 2], [1, 3, 0, 5]],
    ],
    [
        [[1, 0, 2, 0], [0, 3, 0, 1], [2, 0, 1, 4], [0, 5, 2, 1]],
        [[0, 2, 1, 0], [1, 0, 0, 3], [2, 4, 0, 1], [3, 0, 2, 1]],
        [[3, 0, 0, 1], [0, 2, 0, 4], [1, 0, 3, 0], [2, 2, 1, 0]],
    ],
], dtype=torch.float32)


def images_loader(count=24, batch_size=8, seed=0):
    images = torch.randn(count, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return DataLoader(TensorDataset(images, torch.zeros(count, dtype=torch.long)),
                      batch_size=batch_size)


def small_vgg(widths=(6, "M", 5, 4), seed=0):
    torch.manual_seed(seed)
    return VGG(widths).eval()


def test_apoz_of_the_lecture_example():
    assert LECTURE_ACTIVATIONS.shape == (2, 3, 4, 4)
    expected = torch.tensor([11.0, 12.0, 14.0]) / 32
    assert torch.equal(neurons.apoz(LECTURE_ACTIVATIONS), expected)
    assert neurons.apoz(LECTURE_ACTIVATIONS).argmax().item() == 2


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 0.5, 2.0]), min_size=3, max_size=3),
                min_size=1, max_size=6))
def test_apoz_of_linear_activations_counts_zeros_per_column(rows):
    activations = torch.tensor(rows)
    expected = [sum(row[c] == 0 for row in rows) / len(rows) for c in range(3)]
    assert neurons.apoz(activations).tolist() == pytest.approx(expected)


def test_apoz_rejects_bad_input():
    with pytest.raises(ValueError, match="channel dim"):
        neurons.apoz(torch.zeros(4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        neurons.apoz([[0.0]])
    with pytest.raises(ValueError, match=r"N >= 1 samples, got shape \(0, 3, 2, 2\)"):
        neurons.apoz(torch.zeros(0, 3, 2, 2))


def test_collect_apoz_over_a_loader_equals_apoz_of_all_activations():
    model = small_vgg()
    loader = images_loader()
    result = neurons.collect_apoz(model, loader)
    assert list(result) == ["backbone.relu0", "backbone.relu1", "backbone.relu2"]
    images = loader.dataset.tensors[0]
    with torch.no_grad():
        first = torch.relu(model.backbone.bn0(model.backbone.conv0(images)))
    assert torch.allclose(result["backbone.relu0"], neurons.apoz(first))
    one_batch = neurons.collect_apoz(model, images_loader(batch_size=24))
    for name in result:
        assert torch.allclose(result[name], one_batch[name])
    assert not model.training


def test_collect_apoz_needs_relus_and_data():
    with pytest.raises(ValueError, match="no nn.ReLU"):
        neurons.collect_apoz(nn.Linear(2, 2), images_loader())
    with pytest.raises(ValueError, match="empty"):
        neurons.collect_apoz(small_vgg(), [])


def test_sample_holds_patches_whose_contributions_sum_to_the_output():
    model = small_vgg()
    sample = neurons.sample_next_conv(model, 0, images_loader(), positions_per_image=7)
    assert sample.patches.shape == (24 * 7, 6, 9)
    assert sample.outputs.shape == (24 * 7, 5)
    total = neurons.channel_contributions(sample, model.backbone.conv1.weight).sum(dim=2)
    assert torch.allclose(total, sample.outputs, atol=1e-5)


@functools.cache
def small_vgg_sample() -> tuple[neurons.ConvSample, torch.Tensor]:
    model = small_vgg()
    return neurons.sample_next_conv(model, 0, images_loader()), model.backbone.conv1.weight


@settings(max_examples=20, deadline=None)
@given(st.sets(st.integers(0, 5), min_size=1, max_size=6))
def test_least_squares_never_increases_the_reconstruction_error(kept):
    sample, weight = small_vgg_sample()
    keep = torch.tensor(sorted(kept))
    refit = neurons.least_squares_weight(sample, keep, (3, 3))
    without = neurons.reconstruction_error(sample, weight[:, keep], keep)
    assert neurons.reconstruction_error(sample, refit, keep) <= without + 1e-6
    if len(kept) == 6:
        assert neurons.reconstruction_error(sample, refit, keep) < 1e-8


def model_with_dead_heavy_channels() -> VGG:
    """conv0's channels 0-2 are always zero after ReLU but have the largest weights in conv1.

    Magnitude selection keeps exactly the dead channels (relative error 1: nothing of Z is
    reconstructed); the live channels 3-5 reproduce Z exactly.
    """
    model = small_vgg((6, 4))
    with torch.no_grad():
        model.backbone.bn0.weight[:3] = 0
        model.backbone.bn0.bias[:3] = -1
        model.backbone.conv1.weight[:, :3] *= 100
    return model


def test_lasso_with_least_squares_beats_magnitude_where_it_must():
    model = model_with_dead_heavy_channels()
    weight = model.backbone.conv1.weight
    sample = neurons.sample_next_conv(model, 0, images_loader())
    assert neurons.magnitude_channel_selection(weight, 3).tolist() == [0, 1, 2]
    assert neurons.lasso_channel_selection(sample, weight, 3).tolist() == [3, 4, 5]
    errors = neurons.compare_selections(sample, weight, 3)
    assert errors["magnitude"] == pytest.approx(1.0)
    assert errors["magnitude + LS"] == pytest.approx(1.0)
    assert errors["LASSO + LS"] < 1e-6


def test_compare_selections_on_a_random_model_orders_the_methods():
    model = small_vgg((8, 8))
    weight = model.backbone.conv1.weight
    fit = neurons.sample_next_conv(model, 0, images_loader(count=48), seed=0)
    for keep in (2, 4, 6):
        errors = neurons.compare_selections(fit, weight, keep)
        assert errors["magnitude + LS"] <= errors["magnitude"] + 1e-6
        assert 0 <= errors["LASSO + LS"] <= errors["magnitude"] + 1e-6
    held_out = neurons.sample_next_conv(model, 0, images_loader(seed=1))
    assert set(neurons.compare_selections(fit, weight, 4, held_out)) == {
        "magnitude", "magnitude + LS", "LASSO + LS"}


def test_regression_channel_prune_builds_a_new_refit_model():
    model = model_with_dead_heavy_channels()
    before = copy.deepcopy(model.state_dict())
    pruned = neurons.regression_channel_prune(model, 0, 3, images_loader())
    assert pruned.widths == (3, 4)
    assert pruned.backbone.conv1.in_channels == 3 and pruned.backbone.bn0.num_features == 3
    images = images_loader().dataset.tensors[0]
    with torch.no_grad():
        assert torch.allclose(pruned(images), model(images), atol=1e-4)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_regression_channel_prune_baselines_keep_the_largest_channels():
    model = small_vgg((8, 8))
    loader = images_loader(count=48)
    weight = model.backbone.conv1.weight
    kept = neurons.magnitude_channel_selection(weight, 4)
    plain = neurons.regression_channel_prune(model, 0, 4, loader, selection="magnitude",
                                             refit=False)
    assert torch.equal(plain.backbone.conv1.weight, weight[:, kept])
    refit = neurons.regression_channel_prune(model, 0, 4, loader, selection="magnitude")
    sample = neurons.sample_next_conv(model, 0, loader, seed=0)
    assert torch.allclose(refit.backbone.conv1.weight,
                          neurons.least_squares_weight(sample, kept, (3, 3)))
    with pytest.raises(ValueError, match="selection"):
        neurons.regression_channel_prune(model, 0, 4, loader, selection="random")


def test_regression_rejects_bad_arguments():
    model = small_vgg()
    with pytest.raises(ValueError, match=r"conv_index must be an int in \[0, 1\]"):
        neurons.regression_channel_prune(model, 2, 1, images_loader())
    with pytest.raises(ValueError, match=r"num_keep must be an int in \[1, 6\]"):
        neurons.regression_channel_prune(model, 0, 7, images_loader())
    with pytest.raises(ValueError, match=r"num_keep must be an int in \[1, 6\]"):
        neurons.magnitude_channel_selection(model.backbone.conv1.weight, 0)
    with pytest.raises(ValueError, match=r"num_alphas must be an int >= 2"):
        neurons.lasso_channel_selection(small_vgg_sample()[0], small_vgg_sample()[1], 2,
                                        num_alphas=1)
    with pytest.raises(ValueError, match="positions_per_image"):
        neurons.sample_next_conv(model, 0, images_loader(), positions_per_image=0)
    sample = neurons.sample_next_conv(model, 0, images_loader())
    with pytest.raises(ValueError, match="conv weight"):
        neurons.channel_contributions(sample, torch.zeros(5, 6, 3))
    with pytest.raises(ValueError, match="empty"):
        neurons.sample_next_conv(model, 0, [])


def test_apoz_check_accepts_the_reference_and_names_a_wrong_case(capsys):
    checks.check_apoz(neurons.apoz)
    assert capsys.readouterr().out == "apoz: 5/5 cases passed\n"
    with pytest.raises(checks.CheckFailed, match="lecture's 2x3x4x4 example"):
        checks.check_apoz(lambda activations: (activations > 0).float().mean(dim=(0, 2, 3)))


def test_an_all_zero_sample_is_refused_rather_than_answered_arbitrarily():
    weight = torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    zero_outputs = neurons.ConvSample(torch.randn(10, 3, 9), torch.zeros(10, 2))
    zero_patches = neurons.ConvSample(torch.zeros(10, 3, 9), torch.randn(10, 2))
    with pytest.raises(ValueError, match=r"sample.outputs are all zero"):
        neurons.reconstruction_error(zero_outputs, weight[:, :2], torch.tensor([0, 1]))
    for sample in (zero_outputs, zero_patches):
        with pytest.raises(ValueError, match="sample explains nothing"):
            neurons.lasso_channel_selection(sample, weight, 2)
    assert neurons.reconstruction_error(zero_patches, weight[:, :2], torch.tensor([0, 1])) \
        == pytest.approx(1.0)


def test_lowest_apoz_channels_keep_the_least_zero_channels_in_order():
    apoz_per_layer = {"relu0": torch.tensor([0.9, 0.1, 0.5, 0.1]),
                      "relu1": torch.tensor([0.2, 0.8])}
    keep = neurons.lowest_apoz_channels(apoz_per_layer, 0.5)
    assert [k.tolist() for k in keep] == [[1, 3], [0]]
    assert [k.tolist() for k in neurons.lowest_apoz_channels(apoz_per_layer, 0.0)] == [
        [1, 3, 2, 0], [0, 1]]
    with pytest.raises(ValueError, match=r"ratio must be a finite number in \[0, 1\), got 1.0"):
        neurons.lowest_apoz_channels(apoz_per_layer, 1.0)


def test_channel_selection_accuracy_judges_each_choice_on_the_validation_data():
    from labkit.pruning.channels import apply_channel_sorting, channel_prune, remove_channels
    from labkit.training import evaluate

    model = small_vgg()
    loader = DataLoader(TensorDataset(torch.randn(40, 1, 8, 8, generator=torch.Generator()
                                                   .manual_seed(0)),
                                      torch.arange(40) % 10), batch_size=40)
    apoz_per_layer = neurons.collect_apoz(model, loader)
    sorted_model = apply_channel_sorting(model)
    frame = neurons.channel_selection_accuracy(model, sorted_model, apoz_per_layer, loader,
                                               (0.25, 0.5))
    assert frame.index.name == "prune ratio" and list(frame.index) == [0.25, 0.5]
    row = frame.loc[0.5]
    assert row["first channels"] == evaluate(channel_prune(model, 0.5), loader)
    assert row["L2-sorted"] == evaluate(channel_prune(sorted_model, 0.5), loader)
    keep = neurons.lowest_apoz_channels(apoz_per_layer, 0.5)
    assert row["lowest APoZ"] == evaluate(remove_channels(model, keep), loader)
    with pytest.raises(ValueError, match="at least one ratio"):
        neurons.channel_selection_accuracy(model, sorted_model, apoz_per_layer, loader, ())


def test_selection_errors_compare_the_selections_at_each_count():
    model = small_vgg()
    fit = neurons.sample_next_conv(model, 0, images_loader(count=48), seed=0)
    held_out = neurons.sample_next_conv(model, 0, images_loader(seed=1))
    weight = model.backbone.conv1.weight
    frame = neurons.selection_errors(fit, weight, [2, 4], held_out)
    assert frame.index.name == "channels kept" and list(frame.index) == [2, 4]
    assert frame.loc[4].to_dict() == neurons.compare_selections(fit, weight, 4, held_out)
    assert frame.loc[2, "magnitude"] > frame.loc[4, "magnitude"]
    with pytest.raises(ValueError, match="at least one number of channels"):
        neurons.selection_errors(fit, weight, [])
