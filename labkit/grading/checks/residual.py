"""Checks of lab 03b: the channel groups of a ResNet, and the importance over a group's readers."""

from __future__ import annotations

import torch

from labkit.grading.checks.core import Case, Check, close, exact
from labkit.grading.checks.granularity import weights
from labkit.models import ResNet
from labkit.pruning import channels


def residual_groups_reference(model: ResNet) -> list[list[str]]:
    """labkit's answer: the convs of every channel group, from the traced graph."""
    return [list(group.convs) for group in channels.channel_groups(model)]


def _groups_observation(residual_groups, case: Case) -> tuple:
    """The groups as a set of sets: neither the order of the groups nor the order of the
    convs inside a group matters."""
    groups = residual_groups(*case.args)
    if not isinstance(groups, (list, tuple)) or not all(
            isinstance(group, (list, tuple, set)) for group in groups):
        raise TypeError(f"residual_groups must return a list of lists of conv names, got "
                        f"{type(groups).__name__}")
    return tuple(sorted(tuple(sorted(str(name) for name in group)) for group in groups))


def _resnet(seed: int, widths: tuple[int, ...], blocks: int) -> ResNet:
    torch.manual_seed(seed)
    return ResNet(widths, blocks=blocks)


def _groups_cases() -> list[Case]:
    models = [
        ("the two-block ResNet (8, 16), one block per stage", (8, 16), 1),
        ("one stage of two blocks: identity shortcuts only", (8,), 2),
        ("two stages of two blocks (the lab's model)", (16, 32), 2),
        ("three stages, one block each: two projections", (4, 8, 16), 1),
        ("two stages of equal width: a stride-2 projection all the same", (8, 8), 1),
    ]
    return [Case(label, (_resnet(0, widths, blocks),)) for label, widths, blocks in models]


def _hidden_groups(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    stages = int(torch.randint(1, 4, (1,), generator=generator))
    widths = tuple(int(w) for w in torch.randint(2, 9, (stages,), generator=generator))
    blocks = int(torch.randint(1, 4, (1,), generator=generator))
    return [Case(f"ResNet {widths}, {blocks} block(s) per stage", (_resnet(seed, widths, blocks),))]


RESIDUAL_GROUPS = Check(
    name="residual_groups",
    reference=residual_groups_reference,
    cases=_groups_cases,
    hidden=_hidden_groups,
    observe=_groups_observation,
    compare=exact,
    replaces=("labkit.pruning.channels.channel_groups",),
    conventions=("model.named_modules()",),
)


def _importance_cases() -> list[Case]:
    zero_column = weights(3, 5, 4)
    zero_column[:, 2] = 0
    cases = [
        ("one reader: the lecture's 2x2 linear weight", [torch.tensor([[3.0, -2.0],
                                                                       [1.0, -5.0]])]),
        ("a 3x3 conv and a 1x1 projection reading 4 channels",
         [weights(0, 6, 4, 3, 3), weights(1, 8, 4, 1, 1)]),
        ("two convs and the linear head reading 5 channels",
         [weights(2, 3, 5, 3, 3), weights(4, 7, 5, 3, 3), weights(5, 10, 5)]),
        ("a channel no reader uses has importance 0", [zero_column, zero_column.clone()]),
        ("a float64 reader: the importance is float32 all the same",
         [weights(6, 4, 3).double()]),
        ("readers of different channel counts", [weights(7, 4, 3, 3, 3), weights(8, 4, 5)]),
    ]
    return [Case(label, (w,)) for label, w in cases]


def _hidden_importance(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    channels_in = int(torch.randint(2, 9, (1,), generator=generator))
    readers = [torch.randn(3, channels_in, 3, 3, generator=generator),
               torch.randn(5, channels_in, 1, 1, generator=generator),
               torch.randn(10, channels_in, generator=generator)]
    return [Case(f"three readers of {channels_in} channels", (readers,))]


READER_IMPORTANCE = Check(
    name="reader_importance",
    reference=channels.reader_importance,
    cases=_importance_cases,
    hidden=_hidden_importance,
    compare=close(),
    errors=(ValueError,),
    replaces=("labkit.pruning.channels.reader_importance",
              "labkit.pruning.channels.group_importance"),
    conventions=("float32", "ValueError"),
)
