"""The checks of lab 03b: a student's ResNet channel groups and reader importance."""

import pytest
import torch
from torch import nn

from labkit.grading import checks
from labkit.models import BasicBlock
from labkit.pruning import channels


def groups_from_the_modules(model):
    """The lab's solution: walk the blocks; an identity shortcut joins the stream's group,
    a projection starts a new one."""
    stream = ["stem.conv"]
    groups = [stream]
    for name, module in model.named_modules():
        if isinstance(module, BasicBlock):
            groups.append([f"{name}.conv1"])
            if isinstance(module.shortcut, nn.Identity):
                stream.append(f"{name}.conv2")
            else:
                stream = [f"{name}.shortcut.conv", f"{name}.conv2"]
                groups.append(stream)
    return groups


def importance_by_concatenation(weights):
    """The lab's solution: every reader's weights of channel j side by side, one norm."""
    rows = [w.detach().float().transpose(0, 1).flatten(1) for w in weights]
    if len({r.shape[0] for r in rows}) != 1:
        raise ValueError("the readers read different numbers of channels")
    return torch.cat(rows, dim=1).norm(dim=1)


def test_the_solutions_pass(capsys):
    checks.check_residual_groups(groups_from_the_modules)
    checks.check_reader_importance(importance_by_concatenation)
    assert capsys.readouterr().out.splitlines() == ["residual_groups: 5/5 cases passed",
                                                    "reader_importance: 6/6 cases passed"]


def test_one_group_per_conv_fails_and_says_how_many_groups():
    def every_conv_alone(model):
        return [[name] for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]

    with pytest.raises(checks.CheckFailed, match=r"case 'the two-block ResNet .*expected 4 "
                                                 r"items, got 6"):
        checks.check_residual_groups(every_conv_alone)


def test_forgetting_the_projection_fails():
    def projection_joins_the_stream(model):
        return [[name for name in group if "shortcut" not in name] for group in
                groups_from_the_modules(model)]

    with pytest.raises(checks.CheckFailed, match="residual_groups: case"):
        checks.check_residual_groups(projection_joins_the_stream)


def test_summing_importances_instead_of_squares_fails():
    def summed(weights):
        return sum(channels.get_input_channel_importance(w) for w in weights)

    with pytest.raises(checks.CheckFailed, match="a 3x3 conv and a 1x1 projection"):
        checks.check_reader_importance(summed)


def test_not_refusing_mismatched_readers_fails():
    def truncates(weights):
        count = min(w.shape[1] for w in weights)
        return importance_by_concatenation([w[:, :count] for w in weights])

    with pytest.raises(checks.CheckFailed, match="different channel counts' failed: expected "
                                                 "ValueError raised"):
        checks.check_reader_importance(truncates)
