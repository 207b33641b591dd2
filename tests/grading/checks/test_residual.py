"""The checks of lab 03b, a student's ResNet channel groups and reader importance, on the
lab's own solutions (read from the instructor notebook) and on typical mistakes."""

import pytest
from torch import nn

from labkit.grading import checks
from labkit.pruning import channels
from tests.support.lab_submissions import lab_solutions

LAB03B = lab_solutions("03b_residual_pruning")
residual_groups, reader_importance = LAB03B["residual_groups"], LAB03B["reader_importance"]


def test_the_solutions_pass(capsys):
    checks.check_residual_groups(residual_groups)
    checks.check_reader_importance(reader_importance)
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
                residual_groups(model)]

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
        return reader_importance([w[:, :count] for w in weights])

    with pytest.raises(checks.CheckFailed, match="different channel counts' failed: expected "
                                                 "ValueError raised"):
        checks.check_reader_importance(truncates)
