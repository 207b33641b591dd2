import copy
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from labkit import zoo
from labkit.grading import checks
from labkit.measure import count_macs
from labkit.models import MLP, VGG, ResNet, randomize_batchnorms
from labkit.pruning import channels

WIDTHS = (4, "M", 6, 5)


def trained_looking_vgg(widths=WIDTHS, seed=0) -> VGG:
    """A small VGG whose BatchNorms hold non-trivial statistics and affine parameters."""
    torch.manual_seed(seed)
    return randomize_batchnorms(VGG(widths))


def masked_copy(model: VGG, keep: list[torch.Tensor]) -> VGG:
    """The same model with every other channel's activation forced to zero."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for (conv_name, bn_name), kept in zip(channels.conv_blocks(masked), keep, strict=True):
            conv, bn = getattr(masked.backbone, conv_name), getattr(masked.backbone, bn_name)
            dropped = torch.ones(conv.out_channels, dtype=torch.bool)
            dropped[kept] = False
            conv.weight[dropped] = 0
            bn.weight[dropped] = 0
            bn.bias[dropped] = 0
    return masked


def inputs(batch=3, seed=1):
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def vgg_macs(model: VGG, height: int, width: int) -> int:
    """MACs of a VGG by hand: H*W*C_in*C_out*kh*kw per conv, in*out for the head."""
    macs = 0
    for module in model.backbone:
        if isinstance(module, nn.MaxPool2d):
            height, width = height // 2, width // 2
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += height * width * module.in_channels * module.out_channels * kh * kw
    return macs + model.classifier.in_features * model.classifier.out_features


@pytest.mark.parametrize(("channels_in", "ratio", "expected"), [
    (32, 0.3, 22), (10, 0.0, 10), (64, 0.5, 32), (3, 0.9, 1), (1, 0.5, 1), (7, 0.5, 4),
])
def test_get_num_channels_to_keep(channels_in, ratio, expected):
    assert channels.get_num_channels_to_keep(channels_in, ratio) == expected


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 512), st.floats(0, 0.999))
def test_channels_to_keep_is_the_rounded_remainder(channels_in, ratio):
    kept = channels.get_num_channels_to_keep(channels_in, ratio)
    assert 1 <= kept <= channels_in
    assert kept == 1 or abs(kept - (1 - ratio) * channels_in) <= 0.5


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan")])
def test_ratio_outside_zero_one_is_an_error(ratio):
    with pytest.raises(ValueError, match=r"prune_ratio must be in \[0, 1\)"):
        channels.get_num_channels_to_keep(8, ratio)
    with pytest.raises(ValueError, match="prune_ratio"):
        channels.channel_prune(trained_looking_vgg(), ratio)


@pytest.mark.parametrize("ratio", ["0.5", True, None])
def test_ratio_that_is_not_a_number_is_a_type_error(ratio):
    with pytest.raises(TypeError, match="prune_ratio must be a real number"):
        channels.get_num_channels_to_keep(8, ratio)
    with pytest.raises(TypeError, match="prune_ratio must be a real number"):
        channels.channel_prune(trained_looking_vgg(), ratio)


@pytest.mark.parametrize(("count", "error"), [(0, ValueError), (-3, ValueError),
                                              (2.0, TypeError), (True, TypeError)])
def test_channel_count_must_be_positive_int(count, error):
    with pytest.raises(error, match="channels must be an int"):
        channels.get_num_channels_to_keep(count, 0.5)


def test_numpy_numbers_count_as_python_numbers():
    assert channels.get_num_channels_to_keep(np.int64(7), np.float32(0.5)) == 4
    assert channels.channel_prune(trained_looking_vgg(), np.float64(0.5)).widths == (2, "M", 3, 2)
    assert channels.channel_prune(trained_looking_vgg(), np.array([0.0, 0.5, 0.8])).widths == \
        (4, "M", 3, 1)


def test_input_channel_importance_is_the_l2_norm_per_input_channel():
    linear = torch.tensor([[3.0, -2.0], [1.0, -5.0]])
    expected = torch.tensor([10.0, 29.0]).sqrt()
    assert torch.allclose(channels.get_input_channel_importance(linear), expected)
    conv = torch.randn(5, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    by_loop = torch.stack([conv[:, c].norm() for c in range(3)])
    assert torch.allclose(channels.get_input_channel_importance(conv), by_loop)


def test_input_channel_importance_rejects_bad_weights():
    with pytest.raises(ValueError, match="2-d .* or 4-d"):
        channels.get_input_channel_importance(torch.ones(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        channels.get_input_channel_importance([[1.0]])


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_removal_computes_what_the_masked_model_computes(data):
    model = trained_looking_vgg()
    keep = [
        torch.tensor(sorted(data.draw(st.sets(st.integers(0, w - 1), min_size=1, max_size=w))))
        for w in (4, 6, 5)
    ]
    pruned = channels.remove_channels(model, keep)
    with torch.no_grad():
        expected = masked_copy(model, keep)(inputs())
        assert torch.allclose(pruned(inputs()), expected, atol=1e-5)


def test_removal_rebuilds_module_attributes_and_leaves_the_input_untouched():
    model = trained_looking_vgg()
    before = copy.deepcopy(model.state_dict())
    pruned = channels.remove_channels(model, [[0, 2], [5, 1, 3], [4]])
    b = pruned.backbone
    assert (b.conv0.in_channels, b.conv0.out_channels, b.bn0.num_features) == (1, 2, 2)
    assert (b.conv1.in_channels, b.conv1.out_channels, b.bn1.num_features) == (2, 3, 3)
    assert (b.conv2.in_channels, b.conv2.out_channels, b.bn2.num_features) == (3, 1, 1)
    assert b.conv1.weight.shape == (3, 2, 3, 3)
    assert pruned.classifier.in_features == 1 and pruned.classifier.weight.shape == (10, 1)
    assert pruned.widths == (2, "M", 3, 1)
    assert torch.equal(b.bn1.running_mean, model.backbone.bn1.running_mean[[5, 1, 3]])
    assert pruned is not model and model.backbone.conv1.out_channels == 6
    assert not pruned.training and not b.bn1.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_pruned_model_trains():
    pruned = channels.channel_prune(trained_looking_vgg().train(), 0.5)
    pruned(inputs()).sum().backward()
    assert all(p.grad is not None for p in pruned.parameters())


def test_removal_rejects_bad_keep_lists():
    model = trained_looking_vgg()
    with pytest.raises(ValueError, match="each of the 3 channel groups .*, got 2"):
        channels.remove_channels(model, [[0], [0]])
    with pytest.raises(ValueError, match=r"indices in \[0, 5\]"):
        channels.remove_channels(model, [[0], [6], [0]])
    with pytest.raises(ValueError, match="empty"):
        channels.remove_channels(model, [[0], [], [0]])
    with pytest.raises(ValueError, match="repeats"):
        channels.remove_channels(model, [[0, 0], [1], [0]])


def test_channel_sorting_changes_no_output_and_sorts_by_importance():
    model = trained_looking_vgg((8, 8, "M", 16, 12))
    sorted_model = channels.apply_channel_sorting(model)
    with torch.no_grad():
        assert torch.allclose(sorted_model(inputs()), model(inputs()), atol=1e-5)
    next_weights = [sorted_model.backbone.conv1.weight, sorted_model.backbone.conv2.weight,
                    sorted_model.backbone.conv3.weight, sorted_model.classifier.weight]
    for weight in next_weights:
        importance = channels.get_input_channel_importance(weight)
        assert torch.all(importance[:-1] >= importance[1:])
    assert not torch.equal(sorted_model.backbone.conv0.weight, model.backbone.conv0.weight)


def test_sorting_then_pruning_keeps_the_most_important_channels():
    model = trained_looking_vgg()
    pruned = channels.channel_prune(channels.apply_channel_sorting(model), 0.5)
    importance = channels.get_input_channel_importance(model.backbone.conv1.weight)
    top_two = torch.topk(importance, 2).indices
    assert torch.equal(pruned.backbone.bn0.running_mean,
                       model.backbone.bn0.running_mean[top_two])


def test_channel_prune_uniform_and_per_layer():
    model = trained_looking_vgg()
    assert channels.channel_prune(model, 0.5).widths == (2, "M", 3, 2)
    assert channels.channel_prune(model, [0.0, 0.5, 0.8]).widths == (4, "M", 3, 1)
    assert channels.channel_prune(model, 0.0).widths == WIDTHS
    with pytest.raises(ValueError, match="each of the 3 channel groups, got 2"):
        channels.channel_prune(model, [0.1, 0.2])


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, [0.1, 0.6, 0.25, 0.9]])
def test_pruned_macs_match_flop_counter_exactly(ratio):
    model = trained_looking_vgg((8, 8, "M", 16, 16, "M"))
    pruned = channels.channel_prune(model, ratio)
    assert count_macs(pruned, inputs(batch=1)) == vgg_macs(pruned, 8, 8)
    assert count_macs(pruned, inputs(batch=4)) == 4 * vgg_macs(pruned, 8, 8)


def test_thirty_percent_of_channels_leaves_about_half_the_macs():
    model = trained_looking_vgg((64, 64, "M", 128, 128))
    ratio = count_macs(channels.channel_prune(model, 0.3), inputs(1)) / count_macs(model, inputs(1))
    assert ratio == pytest.approx(0.7**2, abs=0.03)


def test_a_model_without_convs_is_a_clear_error():
    with pytest.raises(ValueError, match="MLP.* has no Conv2d"):
        channels.channel_prune(MLP(), 0.5)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got list"):
        channels.channel_groups([nn.Conv2d(1, 2, 3)])


def test_other_element_wise_layers_and_a_missing_batchnorm_are_followed():
    model = trained_looking_vgg()
    model.backbone.relu0 = nn.Dropout()
    model.backbone.bn1 = nn.Identity()
    groups = channels.channel_groups(model)
    assert [group.batchnorms for group in groups] == [("backbone.bn0",), (), ("backbone.bn2",)]
    pruned = channels.channel_prune(model.eval(), 0.5)
    assert pruned.widths == (2, "M", 3, 2)


def test_channel_checks_accept_the_reference_and_reject_wrong_sorting(capsys):
    checks.check_get_num_channels_to_keep(channels.get_num_channels_to_keep)
    checks.check_channel_sorting(channels.apply_channel_sorting)
    lines = capsys.readouterr().out.splitlines()
    assert [re.fullmatch(r"(\w+): (\d+)/\2 cases passed", line).group(1) for line in lines] == \
        ["get_num_channels_to_keep", "apply_channel_sorting"]
    with pytest.raises(checks.CheckFailed, match="case 'VGG \\(4, M, 8\\)' failed"):
        checks.check_channel_sorting(copy.deepcopy)

    def sorts_in_place(model):
        sorted_model = channels.apply_channel_sorting(model)
        model.load_state_dict(sorted_model.state_dict())
        return sorted_model

    with pytest.raises(checks.CheckFailed, match="input model was changed"):
        checks.check_channel_sorting(sorts_in_place)

    def forgets_the_next_layer(model):
        sorted_model = channels.apply_channel_sorting(model)
        sorted_model.classifier = copy.deepcopy(model.classifier)
        return sorted_model

    with pytest.raises(checks.CheckFailed, match="computes something else"):
        checks.check_channel_sorting(forgets_the_next_layer)


def trained_looking_resnet(widths=(4, 6), blocks=2, seed=0) -> ResNet:
    torch.manual_seed(seed)
    return randomize_batchnorms(ResNet(widths, blocks=blocks))


def test_the_groups_of_a_two_block_resnet():
    groups = channels.channel_groups(ResNet((4, 6), blocks=1))
    assert [(g.convs, g.batchnorms, g.readers, g.channels) for g in groups] == [
        (("stem.conv", "stages.0.0.conv2"), ("stem.bn", "stages.0.0.bn2"),
         ("stages.0.0.conv1", "stages.1.0.conv1", "stages.1.0.shortcut.conv"), 4),
        (("stages.0.0.conv1",), ("stages.0.0.bn1",), ("stages.0.0.conv2",), 4),
        (("stages.1.0.conv1",), ("stages.1.0.bn1",), ("stages.1.0.conv2",), 6),
        (("stages.1.0.conv2", "stages.1.0.shortcut.conv"),
         ("stages.1.0.bn2", "stages.1.0.shortcut.bn"), ("classifier",), 6),
    ]


def masked_by_groups(model, keep):
    """The model with every dropped channel of every group zeroed at its convs and BNs."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for group, kept in zip(channels.channel_groups(model), keep, strict=True):
            dropped = torch.ones(group.channels, dtype=torch.bool)
            dropped[kept] = False
            for name in (*group.convs, *group.batchnorms):
                module = masked.get_submodule(name)
                module.weight[dropped] = 0
                if module.bias is not None:
                    module.bias[dropped] = 0
    return masked


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_resnet_removal_computes_what_the_masked_resnet_computes(data):
    model = trained_looking_resnet()
    keep = [torch.tensor(sorted(data.draw(st.sets(st.integers(0, g.channels - 1), min_size=1))))
            for g in channels.channel_groups(model)]
    pruned = channels.remove_channels(model, keep)
    with torch.no_grad():
        assert torch.allclose(pruned(inputs()), masked_by_groups(model, keep)(inputs()),
                              atol=1e-5)


def test_resnet_sorting_changes_no_output_and_pruning_shrinks_every_group():
    model = trained_looking_resnet((8, 12))
    sorted_model = channels.apply_channel_sorting(model)
    with torch.no_grad():
        assert torch.allclose(sorted_model(inputs()), model(inputs()), atol=1e-5)
    for group in channels.channel_groups(sorted_model):
        importance = channels.group_importance(sorted_model, group)
        assert torch.all(importance[:-1] >= importance[1:])
    pruned = channels.channel_prune(sorted_model, 0.5)
    assert [g.channels for g in channels.channel_groups(pruned)] == [4, 4, 4, 6, 6, 6]
    assert count_macs(pruned, inputs(1)) < 0.3 * count_macs(model, inputs(1))


def test_group_importance_of_one_reader_is_its_input_channel_importance():
    model = trained_looking_vgg()
    for group, reader in zip(channels.channel_groups(model),
                             [model.backbone.conv1, model.backbone.conv2, model.classifier],
                             strict=True):
        assert torch.equal(channels.group_importance(model, group),
                           channels.get_input_channel_importance(reader.weight.detach()))


class Concatenated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 3, 3, padding=1)
        self.head = nn.Linear(5, 10)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=1).mean(dim=(2, 3)))


class Flattened(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(2 * 64, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.conv(x), 1))


class ResidualOnTheInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(1, 10)

    def forward(self, x):
        return self.head((self.conv(x) + x).mean(dim=(2, 3)))


class ReturnsFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x).relu()


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.depthwise(self.conv(x)).amax(dim=(-1, -2)))


class PooledFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(3, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


@pytest.mark.parametrize(("model", "message"), [
    (Concatenated(), r"node 'cat' \(call_function cat\)"),
    (Flattened(), r"node 'flatten' .*pool to 1 x 1 first"),
    (ResidualOnTheInput(), r"node 'add' .*adds conv channels to values that are not"),
    (ReturnsFeatures(), r"node 'output' .*returns conv channels"),
    (Depthwise(), r"node 'depthwise' .*groups=4"),
])
def test_graphs_the_grouping_cannot_follow_are_refused_by_node(model, message):
    with pytest.raises(ValueError, match=message):
        channels.channel_prune(model, 0.5)


def test_a_pooled_flatten_and_amax_over_negative_dims_are_followed():
    assert [g.readers for g in channels.channel_groups(PooledFlatten())] == [("head",)]
    pruned = channels.channel_prune(PooledFlatten(), 0.5)
    assert pruned.head.in_features == 2 and pruned(inputs()).shape == (3, 10)


def test_keep_refuses_float_indices():
    with pytest.raises(TypeError, match="must be integer channel indices, got dtype torch.float32"):
        channels.remove_channels(trained_looking_vgg(), [[0.0], [1], [0]])


def torch_pruning_remove(model, keep, example):
    """Torch-Pruning's DepGraph removes every channel not in ``keep`` (one group at a time)."""
    tp = pytest.importorskip("torch_pruning")
    pruned = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
    for group, kept in zip(channels.channel_groups(model), keep, strict=True):
        removed = sorted(set(range(group.channels)) - set(kept.tolist()))
        if removed:
            conv = pruned.get_submodule(group.convs[0])
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=removed).prune()
    return pruned


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("architecture", ["resnet", "vgg"])
def test_torch_pruning_depgraph_removes_the_same_channels(architecture, seed):
    model = trained_looking_resnet((8, 12), seed=seed) if architecture == "resnet" \
        else trained_looking_vgg((8, 8, "M", 16, 12), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    keep = [torch.randperm(g.channels, generator=generator)[:max(1, g.channels // 2)].sort().values
            for g in channels.channel_groups(model)]
    theirs = torch_pruning_remove(model, keep, inputs(1)).eval()
    ours = channels.remove_channels(model, keep).eval()
    with torch.no_grad():
        assert torch.allclose(ours(inputs()), theirs(inputs()), atol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert count_macs(ours, inputs(1)) == count_macs(theirs, inputs(1))
    assert {n: p.shape for n, p in ours.named_parameters()} == \
        {n: p.shape for n, p in theirs.named_parameters()}


def test_the_digits_resnet_recipe_builds_a_two_stage_resnet_of_six_groups():
    model = zoo.RECIPES["resnet-digits"].build()
    assert isinstance(model, ResNet)
    assert [g.channels for g in channels.channel_groups(model)] == [16, 16, 16, 32, 32, 32]
