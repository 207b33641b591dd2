import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from labkit import zoo
from labkit.grading import checks
from labkit.measure import count_macs
from labkit.models import MLP, VGG, DenseNet, MobileNetV2, ResNet, randomize_batchnorms
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


class BroadcastAttention(nn.Module):
    """``x + att(x)`` with a one-channel ``att``: broadcasting repeats it over x's channels."""

    def __init__(self):
        super().__init__()
        self.conv, self.att = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv(x)
        return self.head((x + self.att(x)).mean(dim=(2, 3)))


class ConcatenatesTheInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(3, 10)

    def forward(self, x):
        return self.head(torch.cat([x, self.conv(x)], dim=1).mean(dim=(2, 3)))


class ConcatenatesAlongHeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2, 10)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], dim=2).mean(dim=(2, 3)))


class GroupedOnAConcatenation(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)
        self.grouped, self.head = nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.grouped(torch.cat([self.a(x), self.b(x)], 1)).mean(dim=(2, 3)))


class ConcatenatesItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        x = self.conv(x)
        return self.head(torch.cat([x, torch.relu(x)], dim=1).mean(dim=(2, 3)))


@pytest.mark.parametrize(("model", "message"), [
    (Flattened(), r"node 'flatten' .*pool to 1 x 1 first"),
    (ConcatenatesItself(), r"node 'cat' .*the same channels more than once"),
    (ResidualOnTheInput(), r"node 'add' .*adds conv channels to values that are not"),
    (ReturnsFeatures(), r"node 'output' .*returns conv channels"),
    (BroadcastAttention(), r"node 'add' .*a broadcasting addition of tensors of 8 and 1 "
                           r"channels"),
    (ConcatenatesTheInput(), r"node 'cat' .*concatenates conv channels with values that are "
                             r"not conv channels \(the model's input"),
    (ConcatenatesAlongHeight(), r"node 'cat' .*along dim 2"),
    (GroupedOnAConcatenation(), r"node 'grouped' .*groups=2\) reads concatenated channels"),
])
def test_graphs_the_grouping_cannot_follow_are_refused_by_node(model, message):
    with pytest.raises(ValueError, match=message):
        channels.channel_prune(model, 0.5)
    with pytest.raises(ValueError, match=message):
        channels.apply_channel_sorting(model)


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


def depgraph_model(architecture: str, seed: int) -> nn.Module:
    if architecture == "resnet":
        return trained_looking_resnet((8, 12), seed=seed)
    if architecture == "vgg":
        return trained_looking_vgg((8, 8, "M", 16, 12), seed=seed)
    torch.manual_seed(seed)
    build = {"mobilenetv2": MobileNetV2, "densenet": DenseNet}[architecture]
    return randomize_batchnorms(build()).eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("architecture", ["resnet", "vgg", "mobilenetv2", "densenet"])
def test_torch_pruning_depgraph_removes_the_same_channels(architecture, seed):
    """Depthwise convolutions (MobileNetV2) and concatenations (DenseNet) included."""
    model = depgraph_model(architecture, seed)
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


# DepGraph (Torch-Pruning, Fang et al. 2023) as the oracle. The expected groups and pruned
# shapes below are what its dependency graph prunes for the same models and kept channels:
# a depthwise conv's input and output channels are pruned together
# (prune_depthwise_conv_out_channels), a concatenation maps the consumer's input channels to
# each source by offset (_ConcatIndexMapping), a grouped conv loses the same positions in
# every group (ConvPruner.prune_in_channels keeps the first group's share of the indices,
# the pruner repeats the pruned positions in each group), and a flatten after global
# pooling reads one feature per channel.

def zeroed_at_readers(model, keep):
    """The model computing with every removed channel set to zero where each reader reads
    it (the input of every conv or linear layer that reads the group, at its offset)."""
    masked = copy.deepcopy(model)
    for group, kept in zip(channels.channel_groups(model), keep, strict=True):
        removed = torch.ones(group.channels, dtype=torch.bool)
        removed[torch.as_tensor(kept)] = False
        for name in group.readers:
            first = group.offset(name)

            def zero(module, args, first=first, removed=removed):
                x = args[0].clone()
                x[:, first:first + len(removed)][:, removed] = 0
                return (x, *args[1:])

            masked.get_submodule(name).register_forward_pre_hook(zero)
    return masked


def assert_removal_is_zeroing(model, keep, x):
    pruned = channels.remove_channels(model, keep)
    with torch.no_grad():
        assert torch.allclose(pruned(x), zeroed_at_readers(model, keep)(x), atol=1e-5)
    return pruned


def shapes(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def summary(groups):
    return [(g.convs, g.depthwise, g.readers, g.offsets, g.blocks) for g in groups]


def test_depthwise_conv_channels_are_its_input_channels():
    torch.manual_seed(0)
    model = Depthwise()
    assert summary(channels.channel_groups(model)) == [
        (("conv",), ("depthwise",), ("head",), (), 1)]
    pruned = assert_removal_is_zeroing(model, [[0, 2]], inputs())
    assert shapes(pruned) == {"conv.weight": (2, 1, 3, 3), "conv.bias": (2,),
                              "depthwise.weight": (2, 1, 3, 3), "depthwise.bias": (2,),
                              "head.weight": (10, 2), "head.bias": (10,)}
    depthwise = pruned.depthwise
    assert depthwise.in_channels == depthwise.out_channels == depthwise.groups == 2
    assert torch.equal(depthwise.weight, model.depthwise.weight[[0, 2]])


def test_a_concatenation_splits_its_readers_input_channels_by_source():
    torch.manual_seed(0)
    model = Concatenated()
    assert summary(channels.channel_groups(model)) == [
        (("a",), (), ("head",), (), 1), (("b",), (), ("head",), (("head", 2),), 1)]
    pruned = assert_removal_is_zeroing(model, [[1], [0, 2]], inputs())
    assert shapes(pruned) == {"a.weight": (1, 1, 3, 3), "a.bias": (1,), "b.weight": (2, 1, 3, 3),
                              "b.bias": (2,), "head.weight": (10, 3), "head.bias": (10,)}
    assert torch.equal(pruned.head.weight, model.head.weight[:, [1, 2, 4]])


class ResNeXtBlock(nn.Module):
    """A stem and one ResNeXt block (Xie et al. 2017): 1x1 conv, grouped 3x3 conv
    (groups=2), 1x1 conv, each with its BatchNorm, added to the block's input."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.reduce, self.bn1 = nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.expand, self.bn3 = nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.reduce(x)))
        y = self.bn3(self.expand(torch.relu(self.bn2(self.grouped(y)))))
        return self.head(torch.relu(x + y).mean(dim=(2, 3)))


def test_a_grouped_conv_keeps_the_same_positions_in_every_group():
    torch.manual_seed(0)
    model = randomize_batchnorms(ResNeXtBlock())
    assert summary(channels.channel_groups(model)) == [
        (("stem", "expand"), (), ("reduce", "head"), (), 1),
        (("reduce",), (), ("grouped",), (), 2), (("grouped",), (), ("expand",), (), 2)]
    keep = [[0, 3], [1, 2, 5, 6], [0, 3, 4, 7]]
    pruned = assert_removal_is_zeroing(model, keep, inputs())
    expected = {"stem.weight": (2, 1, 3, 3), "reduce.weight": (4, 2, 1, 1),
                "grouped.weight": (4, 2, 3, 3), "expand.weight": (2, 4, 1, 1),
                "head.weight": (10, 2), "head.bias": (10,)}
    for name, width in (("bn0", 2), ("bn1", 4), ("bn2", 4), ("bn3", 2)):
        expected |= {f"{name}.weight": (width,), f"{name}.bias": (width,)}
    assert shapes(pruned) == expected
    assert (pruned.grouped.in_channels, pruned.grouped.out_channels, pruned.grouped.groups) == \
        (4, 4, 2)
    assert torch.equal(pruned.grouped.weight, model.grouped.weight[[0, 3, 4, 7]][:, [1, 2]])
    theirs = torch_pruning_remove(model.eval(), [torch.tensor(k) for k in keep],
                                  inputs(1)).eval()
    with torch.no_grad():  # DepGraph, run, removes the same channels
        assert torch.allclose(pruned.eval()(inputs()), theirs(inputs()), atol=1e-5)
    assert shapes(theirs) == expected
    with pytest.raises(ValueError, match=r"keep for 'reduce' must keep the same positions, in "
                                         r"the same order, in each of its 2 blocks of 4"):
        channels.remove_channels(model, [[0, 3], [1, 2, 5], [0, 3, 4, 7]])
    sorted_model = channels.apply_channel_sorting(model)
    with torch.no_grad():
        assert torch.allclose(sorted_model(inputs()), model(inputs()), atol=1e-5)
    assert [g.channels for g in channels.channel_groups(
        channels.channel_prune(sorted_model, 0.5))] == [2, 4, 4]


class CifarResNetHead(nn.Module):
    """The head of the CIFAR ResNets: ``F.avg_pool2d(out, out.size()[3])``, then
    ``out.view(out.size(0), -1)``."""

    def __init__(self, kernel=None):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.linear, self.kernel = nn.Linear(4, 10), kernel

    def forward(self, x):
        out = torch.relu(self.bn(self.conv(x)))
        out = F.avg_pool2d(out, out.size()[3] if self.kernel is None else self.kernel)
        return self.linear(out.view(out.size(0), -1))


class ViewAfterAdaptivePooling(CifarResNetHead):
    def forward(self, x):
        out = F.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), (1, 1))
        return self.linear(out.reshape(out.shape[0], -1) if self.kernel is None
                           else out.reshape(-1, self.kernel))


@pytest.mark.parametrize("model_class", [CifarResNetHead, ViewAfterAdaptivePooling])
def test_the_view_head_after_global_pooling_reads_one_feature_per_channel(model_class):
    torch.manual_seed(0)
    model = randomize_batchnorms(model_class())
    assert summary(channels.channel_groups(model)) == [(("conv",), (), ("linear",), (), 1)]
    pruned = assert_removal_is_zeroing(model, [[1, 2]], inputs())
    assert pruned.linear.weight.shape == (10, 2)
    assert torch.equal(pruned.linear.weight, model.linear.weight[:, [1, 2]])


def test_a_view_after_pooling_that_is_not_global_or_to_a_fixed_width_is_refused():
    with pytest.raises(ValueError, match=r"node 'view' .*pool to 1 x 1 first"):
        channels.channel_groups(CifarResNetHead(kernel=4))
    with pytest.raises(ValueError, match=r"node 'reshape' .*reshapes channels"):
        channels.channel_groups(ViewAfterAdaptivePooling(kernel=4))


def small_mobilenet(seed=0):
    torch.manual_seed(seed)
    return randomize_batchnorms(MobileNetV2(((4, 1, 1), (6, 2, 2), (6, 1, 2)), stem=4, last=8))


def test_mobilenet_v2_groups_and_pruned_shapes_match_depgraph():
    model = small_mobilenet()
    b = "blocks.{}.layers.{}".format
    assert summary(channels.channel_groups(model)) == [
        (("stem.conv", b(0, "project")), (b(0, "depthwise"),),
         (b(0, "project"), b(1, "expand")), (), 1),
        ((b(1, "expand"),), (b(1, "depthwise"),), (b(1, "project"),), (), 1),
        ((b(1, "project"), b(2, "project")), (), (b(2, "expand"), "last.conv"), (), 1),
        ((b(2, "expand"),), (b(2, "depthwise"),), (b(2, "project"),), (), 1),
        (("last.conv",), (), ("classifier",), (), 1)]
    pruned = channels.channel_prune(model, 0.5)
    expected = {"stem.conv.weight": (2, 1, 3, 3), b(0, "depthwise.weight"): (2, 1, 3, 3),
                b(0, "project.weight"): (2, 2, 1, 1), b(1, "expand.weight"): (4, 2, 1, 1),
                b(1, "depthwise.weight"): (4, 1, 3, 3), b(1, "project.weight"): (3, 4, 1, 1),
                b(2, "expand.weight"): (6, 3, 1, 1), b(2, "depthwise.weight"): (6, 1, 3, 3),
                b(2, "project.weight"): (3, 6, 1, 1), "last.conv.weight": (4, 3, 1, 1),
                "classifier.weight": (10, 4), "classifier.bias": (10,)}
    for name, width in (("stem.bn", 2), (b(0, "bn1"), 2), (b(0, "bn2"), 2), (b(1, "bn0"), 4),
                        (b(1, "bn1"), 4), (b(1, "bn2"), 3), (b(2, "bn0"), 6), (b(2, "bn1"), 6),
                        (b(2, "bn2"), 3), ("last.bn", 4)):
        expected |= {f"{name}.weight": (width,), f"{name}.bias": (width,)}
    assert shapes(pruned) == expected
    assert pruned(inputs()).shape == (3, 10)


def small_densenet(seed=0):
    torch.manual_seed(seed)
    return randomize_batchnorms(DenseNet((2,), growth=2))


def test_densenet_groups_and_pruned_shapes_match_depgraph():
    model = small_densenet()
    f = "features.{}.layers.{}".format
    assert summary(channels.channel_groups(model)) == [
        (("stem",), (), (f(0, "conv1"), f(1, "conv1"), "classifier"), (), 1),
        ((f(0, "conv1"),), (), (f(0, "conv2"),), (), 1),
        ((f(0, "conv2"),), (), (f(1, "conv1"), "classifier"),
         ((f(1, "bn1"), 4), ("bn", 4), (f(1, "conv1"), 4), ("classifier", 4)), 1),
        ((f(1, "conv1"),), (), (f(1, "conv2"),), (), 1),
        ((f(1, "conv2"),), (), ("classifier",), (("bn", 6), ("classifier", 6)), 1)]
    keep = [[1, 3], [0, 1, 2, 3], [1], [4, 5, 6, 7], [0]]
    pruned = assert_removal_is_zeroing(model, keep, inputs())
    expected = {"stem.weight": (2, 1, 3, 3), f(0, "conv1.weight"): (4, 2, 1, 1),
                f(0, "conv2.weight"): (1, 4, 3, 3), f(1, "conv1.weight"): (4, 3, 1, 1),
                f(1, "conv2.weight"): (1, 4, 3, 3), "classifier.weight": (10, 4),
                "classifier.bias": (10,)}
    for name, width in ((f(0, "bn1"), 2), (f(0, "bn2"), 4), (f(1, "bn1"), 3), (f(1, "bn2"), 4),
                        ("bn", 4)):
        expected |= {f"{name}.weight": (width,), f"{name}.bias": (width,)}
    assert shapes(pruned) == expected
    assert torch.equal(pruned.classifier.weight, model.classifier.weight[:, [1, 3, 5, 6]])
    assert torch.equal(pruned.features[1].layers.conv1.weight,
                       model.features[1].layers.conv1.weight[4:][:, [1, 3, 5]])
    assert torch.equal(pruned.bn.running_mean, model.bn.running_mean[[1, 3, 5, 6]])


@settings(max_examples=8, deadline=None)
@given(st.sampled_from([small_mobilenet, small_densenet, DenseNet]), st.data())
def test_removal_zeroes_exactly_the_removed_channels(build, data):
    model = randomize_batchnorms(build())
    keep = [data.draw(st.permutations(range(g.channels)).map(
        lambda order, g=g: sorted(order[:data.draw(st.integers(1, g.channels))])))
        for g in channels.channel_groups(model)]
    assert_removal_is_zeroing(model, keep, inputs())


@pytest.mark.parametrize("build", [small_mobilenet, small_densenet])
def test_sorting_and_pruning_the_new_models(build):
    model = build()
    sorted_model = channels.apply_channel_sorting(model)
    with torch.no_grad():
        assert torch.allclose(sorted_model(inputs()), model(inputs()), atol=1e-5)
    pruned = channels.channel_prune(sorted_model, 0.5)
    assert count_macs(pruned, inputs(1)) < 0.5 * count_macs(model, inputs(1))


class AuxiliaryHead(nn.Module):
    """An auxiliary classifier that reads the first conv's channels in training only."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.head = nn.Conv2d(4, 6, 3, padding=1), nn.Linear(6, 10)
        self.aux = nn.Linear(4, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        out = self.head(self.conv2(x).mean(dim=(2, 3)))
        if self.training:
            return out, self.aux(x.mean(dim=(2, 3)))
        return out


@pytest.mark.parametrize("training", [False, True])
def test_readers_used_only_in_training_are_found(training):
    model = AuxiliaryHead().train(training)
    assert [g.readers for g in channels.channel_groups(model)] == [("conv2", "aux"), ("head",)]
    assert model.training is training and model.bn.training is training
    pruned = channels.channel_prune(model, 0.5)
    assert pruned.aux.in_features == 2
    main, auxiliary = pruned.train()(inputs())
    assert main.shape == auxiliary.shape == (3, 10)
    assert pruned.eval()(inputs()).shape == (3, 10)


class StandardizedConv(nn.Conv2d):
    """A conv subclass with its own forward: weights standardised per output channel."""

    def forward(self, x):
        weight = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


class DoubledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class SubclassedLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = StandardizedConv(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = DoubledLinear(4, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_conv_and_linear_subclasses_are_layers_whose_channels_are_removed():
    torch.manual_seed(0)
    model = randomize_batchnorms(SubclassedLayers())
    assert [(g.convs, g.batchnorms, g.readers) for g in channels.channel_groups(model)] == [
        (("conv",), ("bn",), ("head",))]
    pruned = assert_removal_is_zeroing(model, [[0, 3]], inputs())
    assert isinstance(pruned.conv, StandardizedConv) and pruned.conv.weight.shape == (2, 1, 3, 3)
    assert pruned.head.weight.shape == (10, 2)
