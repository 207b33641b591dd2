"""Checks of lab 03: APoZ, channel counts, input-channel importance, channel sorting."""

from __future__ import annotations

from fractions import Fraction

import torch

from labkit.grading.checks.core import Case, Check, close, exact
from labkit.grading.checks.granularity import weights
from labkit.models import VGG, randomize_batchnorms
from labkit.pruning import channels, neurons


def _lecture_apoz_activations() -> torch.Tensor:
    """ReLU outputs of 2 images x 3 channels x 4 x 4 with 11, 12 and 14 zeros of 32 per
    channel: the lecture's APoZ example (11/32, 12/32, 14/32)."""
    counts = ((5, 6), (6, 6), (7, 7))
    activations = torch.ones(2, 3, 16)
    for channel, per_image in enumerate(counts):
        for image, zeros in enumerate(per_image):
            activations[image, channel, (torch.arange(zeros) * 7 + channel) % 16] = 0
    return activations.reshape(2, 3, 4, 4)


def _apoz_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    activations = [
        ("the lecture's 2x3x4x4 example", _lecture_apoz_activations()),
        ("random ReLU outputs, 5x4x3x3", torch.relu(torch.randn(5, 4, 3, 3, generator=generator))),
        ("all zero", torch.zeros(2, 3, 2, 2)),
        ("no zero", torch.ones(3, 2, 4, 4)),
        ("linear layer outputs (N, C)", torch.relu(torch.randn(6, 5, generator=generator))),
    ]
    return [Case(label, (a,)) for label, a in activations]


def _hidden_apoz(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    return [Case("random ReLU outputs, 3x6x5x5",
                 (torch.relu(torch.randn(3, 6, 5, 5, generator=generator) - 0.3),)),
            Case("random linear outputs, 7x4",
                 (torch.relu(torch.randn(7, 4, generator=generator)),))]


APOZ = Check(
    name="apoz",
    reference=neurons.apoz,
    cases=_apoz_cases,
    hidden=_hidden_apoz,
    compare=close(),
    replaces=("labkit.pruning.neurons.apoz",),
    conventions=("float32", "(C,)"),
)


def _keep_cases() -> list[Case]:
    arguments = [(32, 0.3), (64, 0.5), (10, 0.0), (3, 0.9), (1, 0.5), (128, 0.25), (7, 0.7)]
    ties = [("a tie rounds to even: 6 channels at 0.25 keep round(4.5) = 4", 6, 0.25),
            ("a tie rounds to even: 10 channels at 0.25 keep round(7.5) = 8", 10, 0.25),
            ("round the kept count: 3 channels at 0.5 keep round(1.5) = 2", 3, 0.5)]
    return [*(Case(f"channels={c}, prune_ratio={r}", (c, r)) for c, r in arguments),
            *(Case(label, (c, r)) for label, c, r in ties)]


def _is_tie(channels: int, ratio: float) -> bool:
    """Whether ``(1 - ratio) * channels`` is exactly half-way between two integers for the
    decimal ``ratio``: float arithmetic may land on either side of such a tie."""
    return ((1 - Fraction(str(ratio))) * channels).denominator == 2


def _hidden_keep(seed: int) -> list[Case]:
    """Random counts and ratios of two decimals, without ties (the public cases hold
    ties whose float arithmetic is exact)."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    while len(cases) < 4:
        count = int(torch.randint(1, 200, (1,), generator=generator))
        ratio = round(float(torch.rand(1, generator=generator)) * 0.95, 2)
        if not _is_tie(count, ratio):
            cases.append(Case(f"channels={count}, prune_ratio={ratio}", (count, ratio)))
    return cases


GET_NUM_CHANNELS_TO_KEEP = Check(
    name="get_num_channels_to_keep",
    reference=channels.get_num_channels_to_keep,
    cases=_keep_cases,
    hidden=_hidden_keep,
    compare=close(),
    replaces=("labkit.pruning.channels.get_num_channels_to_keep",),
    conventions=("round", "at least one", "to the even", "an integer"),
)


def _importance_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    zero_channel = torch.randn(2, 3, 1, 1, generator=generator) * \
        torch.tensor([1.0, 0.0, 1.0])[:, None, None]
    cases = [
        ("the lecture's 2x2 linear weight", torch.tensor([[3.0, -2.0], [1.0, -5.0]])),
        ("conv weight 4x3x3x3", torch.randn(4, 3, 3, 3, generator=generator)),
        ("conv weight with a zero input channel", zero_channel),
        ("linear weight 10x6", torch.randn(10, 6, generator=generator)),
        ("a float64 weight: the importance is float32 all the same",
         weights(3, 4, 5).double()),
    ]
    return [Case(label, (w,)) for label, w in cases]


def _hidden_importance(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    return [Case("random conv weight 5x4x3x3", (torch.randn(5, 4, 3, 3, generator=generator),)),
            Case("random linear weight 3x9", (torch.randn(3, 9, generator=generator),))]


def _float32_importance(weight: torch.Tensor) -> torch.Tensor:
    """labkit's importance, as the exercise asks it: float32 whatever the weight's dtype."""
    return channels.get_input_channel_importance(weight).float()


INPUT_CHANNEL_IMPORTANCE = Check(
    name="get_input_channel_importance",
    reference=_float32_importance,
    cases=_importance_cases,
    hidden=_hidden_importance,
    compare=close(),
    replaces=("labkit.pruning.channels.get_input_channel_importance",),
    conventions=("float32", "`float64` weight", "not change"),
)


def _all_tensors(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])


def _channel_orders(original: VGG, result: VGG) -> tuple[tuple[int, ...], ...]:
    """Which original channel each channel of ``result`` is, conv by conv (found by its
    BatchNorm running mean, which the cases make distinct)."""
    orders = []
    for _, bn in channels.conv_blocks(original):
        before = getattr(original.backbone, bn).running_mean
        after = getattr(result.backbone, bn).running_mean
        orders.append(tuple(int((before - value).abs().argmin()) for value in after))
    return tuple(orders)


def _sorting_observation(apply_channel_sorting, case: Case) -> tuple:
    """The channel order of the sorted model, after making sure the input model is left
    alone and the sorted model computes the same function."""
    (model,) = case.args
    before = _all_tensors(model)
    result = apply_channel_sorting(model)
    if not torch.equal(_all_tensors(model), before):
        raise ValueError("the input model was changed: sort a copy (copy.deepcopy)")
    images = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if not torch.allclose(result.eval()(images), model.eval()(images), atol=1e-4):
            raise ValueError("the sorted model computes something else than the input: "
                             "permute conv, BatchNorm and the next layer's input together")
    return _channel_orders(model, result)


def _vgg(seed: int, widths: tuple) -> VGG:
    torch.manual_seed(seed)
    return randomize_batchnorms(VGG(widths))


def _sorting_cases() -> list[Case]:
    models = [("VGG (4, M, 8)", (4, "M", 8)), ("VGG (6, 5, M, 7)", (6, 5, "M", 7)),
              ("digits-sized VGG", (32, 32, "M", 64, 64, "M"))]
    return [Case(label, (_vgg(0, widths),)) for label, widths in models]


def _hidden_sorting(seed: int) -> list[Case]:
    return [Case("random VGG (5, M, 6, 4)", (_vgg(seed, (5, "M", 6, 4)),))]


CHANNEL_SORTING = Check(
    name="apply_channel_sorting",
    reference=channels.apply_channel_sorting,
    cases=_sorting_cases,
    hidden=_hidden_sorting,
    observe=_sorting_observation,
    compare=exact,
    pure=False,
    replaces=("labkit.pruning.channels.apply_channel_sorting",),
    conventions=("copy",),
)
