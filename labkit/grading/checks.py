"""The exercise checks the labs call.

A check runs a student's function on several cases (edge cases included) and
compares each result with labkit's reference implementation. On success it prints
exactly one deterministic line, ``<name>: <n>/<n> cases passed``, which nbval compares
with the instructor notebook's stored output. On the first failing case it raises
:class:`CheckFailed` saying which case failed, what was expected and what came back,
so a student knows what to fix and the grader records why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit import data, measure
from labkit.hardware import eie, nm, sparseconv
from labkit.models import MLP, VGG, randomize_batchnorms
from labkit.pruning import channels, criteria, granularity, neurons, schedule, sensitivity
from labkit.search import amc
from labkit.training import evaluate


class CheckFailed(AssertionError):
    """A student function gave a wrong answer (or raised) on a named case."""


@dataclass
class Case:
    """One call of the student's function: a name, the arguments, the expected value."""

    name: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)


def _same(expected: Any, actual: Any, tolerance: float) -> bool:
    if isinstance(expected, torch.Tensor):
        return (isinstance(actual, torch.Tensor) and actual.shape == expected.shape
                and actual.dtype == expected.dtype
                and torch.allclose(actual.double(), expected.double(), atol=tolerance, rtol=0))
    if isinstance(expected, float):
        return isinstance(actual, (int, float)) and math.isclose(
            float(actual), expected, rel_tol=tolerance, abs_tol=tolerance)
    return type(actual) is type(expected) and actual == expected


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, values={value.tolist()})" \
            if value.numel() <= 16 else f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    return repr(value)


def run_check(
    name: str, function: Callable, cases: Sequence[Case], tolerance: float = 1e-6
) -> None:
    """Run ``function`` on every case; print one line or raise :class:`CheckFailed`."""
    if not callable(function):
        raise TypeError(f"{name}: expected a function, got {type(function).__name__}")
    for case in cases:
        try:
            actual = function(*case.args, **case.kwargs)
        except NotImplementedError as error:
            raise CheckFailed(f"{name}: not implemented yet (case {case.name!r})") from error
        except Exception as error:
            raise CheckFailed(
                f"{name}: case {case.name!r} raised {type(error).__name__}: {error}"
            ) from error
        if not _same(case.expected, actual, tolerance):
            raise CheckFailed(
                f"{name}: case {case.name!r} failed: expected {_show(case.expected)}, "
                f"got {_show(actual)}"
            )
    print(f"{name}: {len(cases)}/{len(cases)} cases passed")


def _tensor_cases() -> list[tuple[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    half = torch.randn(8, 8, generator=generator)
    half[half.abs() < half.abs().median()] = 0
    return [
        ("all non-zero", torch.arange(1.0, 7.0).reshape(2, 3)),
        ("all zero", torch.zeros(3, 4)),
        ("one zero of four", torch.tensor([1.0, 0.0, -2.0, 3.0])),
        ("about half zero, 8x8", half),
        ("4-d conv weight", torch.tensor([0.0, 1.0] * 27).reshape(3, 2, 3, 3)),
        ("negative values only", -torch.ones(5)),
    ]


def check_get_sparsity(get_sparsity: Callable[[torch.Tensor], float]) -> None:
    """Lab 00: ``get_sparsity(tensor)`` is the fraction of zero elements."""
    cases = [Case(label, (t,), measure.get_sparsity(t)) for label, t in _tensor_cases()]
    run_check("get_sparsity", get_sparsity, cases)


def _model_cases() -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    pruned = VGG((4, "M", 8))
    with torch.no_grad():
        pruned.backbone.conv0.weight[:2] = 0
        pruned.classifier.weight[:, ::2] = 0
    return [("small VGG", VGG((4, "M", 8))), ("MLP", MLP(16, (8,), 4)),
            ("VGG with zeroed weights", pruned)]


def check_get_model_size(get_model_size: Callable[..., int]) -> None:
    """Lab 00: ``get_model_size(model, data_width, count_nonzero_only)`` in bits."""
    cases = []
    for label, model in _model_cases():
        for width in (32, 8):
            for nonzero in (False, True):
                expected = measure.model_size_bits(model, width, count_nonzero_only=nonzero)
                cases.append(Case(f"{label}, {width}-bit, count_nonzero_only={nonzero}",
                                  (model, width, nonzero), expected))
    run_check("get_model_size", get_model_size, cases)


# Lab 07: hardware support for sparsity (EIE, 2:4 metadata, sparse-convolution kernel maps).


def _comparable(name: str, function: Callable, convert: Callable) -> Callable:
    """``function`` followed by ``convert``, which turns its result into one tensor."""
    if not callable(function):
        raise TypeError(f"{name}: expected a function, got {type(function).__name__}")
    return lambda *args: convert(function(*args))


def _stack_pair(pair: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(tuple(pair))


def _codes_with_gaps(length: int, nonzeros: dict[int, int]) -> torch.Tensor:
    codes = torch.zeros(length, dtype=torch.int64)
    codes[list(nonzeros)] = torch.tensor(list(nonzeros.values()))
    return codes


def check_relative_index_encode(relative_index_encode: Callable) -> None:
    """Lab 07: EIE's ``(v, z)`` entries of one column slice, padding entries included."""

    generator = torch.Generator().manual_seed(0)
    random_codes = torch.randint(1, 16, (64,), generator=generator)
    random_codes[torch.rand(64, generator=generator) < 0.9] = 0
    columns = [
        ("empty column", torch.zeros(0, dtype=torch.int64)),
        ("all zeros: trailing zeros need no entry", torch.zeros(20, dtype=torch.int64)),
        ("no zeros", torch.tensor([1, 2, 3, 4])),
        ("the example: 3 at row 2, 5 at 3, 7 at 22", _codes_with_gaps(24, {2: 3, 3: 5, 22: 7})),
        ("a run of 15 zeros needs no padding", _codes_with_gaps(17, {15: 9})),
        ("a run of 16 zeros needs one padding entry", _codes_with_gaps(17, {16: 9})),
        ("a run of 31 zeros needs one padding entry", _codes_with_gaps(40, {31: 2})),
        ("a run of 32 zeros needs two padding entries", _codes_with_gaps(40, {32: 2})),
        ("two long runs", _codes_with_gaps(60, {0: 1, 20: 15, 55: 8})),
        ("codes given as uint8", _codes_with_gaps(30, {1: 4, 29: 6}).to(torch.uint8)),
        ("random column, 90% zeros", random_codes),
    ]
    cases = [Case(label, (codes,), _stack_pair(eie.relative_index_encode(codes)))
             for label, codes in columns]
    name = "relative_index_encode"
    run_check(name, _comparable(name, relative_index_encode, _stack_pair), cases)


def check_pack_2_4_metadata(pack_2_4_metadata: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Lab 07: the packed 2-bit positions of a 2:4 sparse matrix's kept values."""

    generator = torch.Generator().manual_seed(0)
    matrices = [
        ("one group, kept at 1 and 3", torch.tensor([[0.0, 5.0, 0.0, -3.0]])),
        ("one group, kept at 2 and 3", torch.tensor([[0.0, 0.0, 1.0, 2.0]])),
        ("one group, kept at 0 and 1", torch.tensor([[-4.0, 4.0, 0.0, 0.0]])),
        ("a single non-zero keeps the lowest free zero", torch.tensor([[0.0, 0.0, 7.0, 0.0]])),
        ("all-zero rows", torch.zeros(2, 8)),
        ("8 columns: one full byte per row",
         torch.tensor([[1.0, 0, 0, 2, 0, 3, 4, 0], [0, 0, 5, 6, 7, 0, 8, 0]])),
        ("12 columns: a half-used second byte",
         nm.prune_2_4(torch.randn(3, 12, generator=generator))),
        ("random 2:4 matrix, 6 x 32", nm.prune_2_4(torch.randn(6, 32, generator=generator))),
        ("float64 weights", nm.prune_2_4(torch.randn(4, 16, generator=generator).double())),
    ]
    cases = [Case(label, (weight,), nm.compress_2_4(weight).metadata)
             for label, weight in matrices]
    run_check("pack_2_4_metadata", pack_2_4_metadata, cases)


def _kernel_map_table(pairs_per_offset: Sequence[torch.Tensor]) -> torch.Tensor:
    """All pairs as rows ``(offset index, input, output)``, sorted: one canonical order."""
    rows = [torch.cat([torch.full((len(pairs), 1), index), pairs.reshape(-1, 2).long()], dim=1)
            for index, pairs in enumerate(pairs_per_offset)]
    table = torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64)
    for column in (1, 2, 0):
        table = table[table[:, column].argsort(stable=True)]
    return table


def check_kernel_map(kernel_map: Callable[[torch.Tensor, int], Sequence[torch.Tensor]]) -> None:
    """Lab 07: for each offset ``d``, the pairs ``(i, o)`` with ``c_i = c_o + d``.

    The pairs of one offset may come in any order; they are compared after sorting.
    """

    sphere, _ = sparseconv.voxelize(sparseconv.synthetic_point_cloud("sphere", 300), 0.25)
    torus, _ = sparseconv.voxelize(sparseconv.synthetic_point_cloud("torus", 300), 0.2)
    block = torch.cartesian_prod(*[torch.arange(2)] * 3)
    clouds = [
        ("one voxel, k=1", torch.tensor([[0, 0, 0]]), 1),
        ("one voxel, k=3: only the centre offset", torch.tensor([[5, -2, 7]]), 3),
        ("two neighbours along z, k=3", torch.tensor([[0, 0, 0], [0, 0, 1]]), 3),
        ("a 2 x 2 x 2 block, k=3", block, 3),
        ("a 2 x 2 x 2 block in reverse order, k=3", block.flip(0), 3),
        ("voxels too far apart to meet, k=3", torch.tensor([[0, 0, 0], [2, 0, 0], [0, 5, 0]]), 3),
        ("negative coordinates, k=3", torch.tensor([[-3, -1, 0], [-2, -1, 0], [-2, 0, 1]]), 3),
        ("a voxelised sphere, k=3", sphere, 3),
        ("a voxelised torus, k=5", torus, 5),
    ]
    cases = [
        Case(label, (coords, k),
             _kernel_map_table(sparseconv.build_kernel_map(coords, k).pairs))
        for label, coords, k in clouds
    ]
    name = "kernel_map"
    run_check(name, _comparable(name, kernel_map, _kernel_map_table), cases)


# Labs 01 and 02: pruning granularity and pruning criteria.


@dataclass(frozen=True)
class Raises:
    """The outcome of a case that must raise ``error`` (the message is not compared)."""

    error: type[Exception]
    message: str = field(default="", compare=False)

    def __repr__(self) -> str:
        return f"{self.error.__name__} raised" + (f" ({self.message})" if self.message else "")


def _raising_as_value(function: Callable, error: type[Exception]) -> Callable:
    """``function``, returning :class:`Raises` where it raises ``error``, so that a case
    can expect the error like any other outcome."""
    if not callable(function):
        return function

    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except error as raised:
            return Raises(error, str(raised))

    return wrapper


def _weights(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def check_fine_grained_mask(fine_grained_mask: Callable[[torch.Tensor, float], torch.Tensor]
                            ) -> None:
    """Lab 01: the keep-mask pruning exactly ``round(numel * sparsity)`` smallest ``|w|``;
    ties keep the first element in row-major order; sparsity outside [0, 1) raises."""

    weights = [
        ("sparsity 0 keeps everything", _weights(0, 4, 4), 0.0),
        ("half of a 2x3 weight", _weights(1, 2, 3), 0.5),
        ("exact zero count: 4-d conv weight at 70%", _weights(2, 8, 4, 3, 3), 0.7),
        ("linear weight at 90%", _weights(3, 10, 64), 0.9),
        ("ties: four equal weights at 50%", torch.ones(4), 0.5),
        ("ties across signs: [1, -1, 1, -1, 2] at 40%",
         torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0]), 0.4),
        ("all-zero weight at 50%", torch.zeros(2, 4), 0.5),
        ("rounding: 10 weights at 25% prune round(2.5) = 2", torch.arange(1.0, 11.0), 0.25),
        ("rounding: 10 weights at 35% prune round(3.5) = 4", torch.arange(1.0, 11.0), 0.35),
    ]
    cases = [Case(label, (w, s), granularity.fine_grained_mask(w, s)) for label, w, s in weights]
    cases += [Case(f"sparsity {s} is outside [0, 1)", (torch.ones(4), s), Raises(ValueError))
              for s in (1.0, -0.1)]
    run_check("fine_grained_mask", _raising_as_value(fine_grained_mask, ValueError), cases)


def check_nm_mask(nm_mask: Callable[[torch.Tensor, int, int], torch.Tensor]) -> None:
    """Lab 01: N:M keep-masks over groups of ``m`` consecutive input channels (dim 1);
    ``m`` not dividing the input dimension, or ``n`` outside [0, m], raises ValueError."""

    weights = [
        ("2:4 on a 4x8 linear weight", _weights(0, 4, 8), 2, 4),
        ("1:4 on a 4x8 linear weight", _weights(1, 4, 8), 1, 4),
        ("3:4 on a 2x12 linear weight", _weights(2, 2, 12), 3, 4),
        ("2:8 on a 3x16 linear weight", _weights(3, 3, 16), 2, 8),
        ("2:4 on a 4x8x3x3 conv weight: groups along input channels",
         _weights(4, 4, 8, 3, 3), 2, 4),
        ("4:4 keeps everything", _weights(5, 2, 8), 4, 4),
        ("ties: all-equal weights keep the first 2 of every 4", torch.ones(2, 8), 2, 4),
    ]
    cases = [Case(label, (w, n, m), granularity.nm_mask(w, n, m)) for label, w, n, m in weights]
    cases += [
        Case("m=4 does not divide 6 input features", (torch.ones(2, 6), 2, 4),
             Raises(ValueError)),
        Case("m=4 does not divide 1 input channel of a conv", (torch.ones(8, 1, 3, 3), 2, 4),
             Raises(ValueError)),
        Case("n=5 > m=4", (torch.ones(2, 8), 5, 4), Raises(ValueError)),
    ]
    run_check("nm_mask", _raising_as_value(nm_mask, ValueError), cases)


def check_row_norm(row_norm: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Lab 02: the Lp norm of every row (output channel) of a weight."""

    lecture = torch.tensor([[3.0, -2.0], [1.0, -5.0]])
    weights = [
        ("the lecture's [[3, -2], [1, -5]], L1: 5 and 6", lecture, 1),
        ("the lecture's [[3, -2], [1, -5]], L2: sqrt(13) and sqrt(26)", lecture, 2),
        ("a linear weight with a zero row, L1", torch.tensor([[0.0, 0.0], [1.5, -2.5]]), 1),
        ("a 6x10 linear weight, L2", _weights(0, 6, 10), 2),
        ("a 4x3x3x3 conv weight: one norm per output channel, L1", _weights(1, 4, 3, 3, 3), 1),
        ("a 4x3x3x3 conv weight, L2", _weights(1, 4, 3, 3, 3), 2),
    ]
    cases = [Case(label, (w, p), criteria.row_norm(w, p)) for label, w, p in weights]
    run_check("row_norm", row_norm, cases, tolerance=1e-5)


def _tiny_classifier_loss() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(12, 5, generator=generator)
    labels = torch.randint(0, 3, (12,), generator=generator)
    weight = torch.randn(3, 5, generator=generator).requires_grad_()
    return torch.nn.functional.cross_entropy(inputs @ weight.T, labels), weight


def _tiny_tanh_network_loss() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(10, 4, generator=generator)
    labels = torch.randint(0, 2, (10,), generator=generator)
    weight = torch.randn(3, 4, generator=generator).requires_grad_()
    head = torch.randn(2, 3, generator=generator)
    return torch.nn.functional.cross_entropy(torch.tanh(inputs @ weight.T) @ head.T,
                                             labels), weight


def check_hessian_diagonal(hessian_diagonal: Callable[[torch.Tensor, torch.Tensor],
                                                      torch.Tensor]) -> None:
    """Lab 02: the exact diagonal ``d^2 loss / dw_i^2`` of a loss's Hessian, by autograd."""

    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, -2.0], [0.0, -2.0, 5.0]])
    w = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)
    v = torch.tensor([[0.5, -1.0], [2.0, 0.1]], requires_grad=True)
    losses = [
        ("quadratic 1/2 w^T A w + b^T w: the diagonal of A",
         0.5 * w @ a @ w + torch.tensor([1.0, -1.0, 2.0]) @ w, w),
        ("sum of v^3 over a 2x2 weight: 6 v", (v**3).sum(), v),
        ("softmax regression, 3x5 weight", *_tiny_classifier_loss()),
        ("tanh layer under a fixed head, 3x4 weight", *_tiny_tanh_network_loss()),
    ]
    cases = [Case(label, (loss, p), criteria.exact_hessian_diagonal(loss, p))
             for label, loss, p in losses]
    run_check("hessian_diagonal", hessian_diagonal, cases, tolerance=1e-5)


def check_obd_importance(obd_importance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                         ) -> None:
    """Lab 02: Optimal Brain Damage's saliency ``1/2 h_ii w_i^2``."""

    generator = torch.Generator().manual_seed(0)
    pairs = [
        ("three weights", torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 4.0])),
        ("a zero weight costs nothing", torch.tensor([0.0, 3.0]), torch.tensor([9.0, 1.0])),
        ("negative curvature", torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.0])),
        ("a 2x3x3x3 conv weight", torch.randn(2, 3, 3, 3, generator=generator),
         torch.rand(2, 3, 3, 3, generator=generator)),
    ]
    cases = [Case(label, (w, h), criteria.obd_importance(w, h)) for label, w, h in pairs]
    run_check("obd_importance", obd_importance, cases)


def _penalty_and_gradient(slimming_penalty: Callable) -> Callable:
    """The penalty followed by its gradient with respect to every BatchNorm scale."""
    if not callable(slimming_penalty):
        return slimming_penalty

    def penalty_and_gradient(model: nn.Module, strength: float) -> torch.Tensor:
        penalty = slimming_penalty(model, strength)
        gammas = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        gradients = torch.autograd.grad(penalty, gammas)
        return torch.cat([penalty.detach().reshape(1), *(g.flatten() for g in gradients)])

    return penalty_and_gradient


def check_slimming_penalty(slimming_penalty: Callable[[nn.Module, float], torch.Tensor]
                           ) -> None:
    """Lab 02: network slimming's ``strength * sum |gamma|``, a differentiable tensor.

    Each case compares one tensor: the penalty, then its gradient with respect to the
    BatchNorm scales of every layer (``strength * sign(gamma)``).
    """

    torch.manual_seed(0)
    trained_like = VGG((4, "M", 6))
    with torch.no_grad():
        trained_like.backbone.bn0.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        trained_like.backbone.bn1.weight.copy_(torch.linspace(-1.0, 1.5, 6))
    models = [("fresh VGG, gamma = 1", VGG((4, "M", 8))),
              ("VGG with negative and zero gammas", trained_like)]
    cases = [Case(f"{label}, strength {strength}", (model, strength),
                  _penalty_and_gradient(criteria.slimming_penalty)(model, strength))
             for label, model in models for strength in (1e-4, 0.1, 0.0)]
    run_check("slimming_penalty", _penalty_and_gradient(slimming_penalty), cases)


# --- Labs 03 and 04: neuron and channel pruning, sensitivity and ratio choice -------------


def _lecture_apoz_activations() -> torch.Tensor:
    """ReLU outputs of 2 images x 3 channels x 4 x 4 with 11, 12 and 14 zeros of 32 per
    channel: the lecture's APoZ example (11/32, 12/32, 14/32)."""
    counts = ((5, 6), (6, 6), (7, 7))
    activations = torch.ones(2, 3, 16)
    for channel, per_image in enumerate(counts):
        for image, zeros in enumerate(per_image):
            activations[image, channel, (torch.arange(zeros) * 7 + channel) % 16] = 0
    return activations.reshape(2, 3, 4, 4)


def check_apoz(apoz: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Lab 03: ``apoz(activations)`` is each channel's (dim 1) fraction of zeros."""

    generator = torch.Generator().manual_seed(0)
    relu_outputs = torch.relu(torch.randn(5, 4, 3, 3, generator=generator))
    activations = [
        ("the lecture's 2x3x4x4 example", _lecture_apoz_activations()),
        ("random ReLU outputs, 5x4x3x3", relu_outputs),
        ("all zero", torch.zeros(2, 3, 2, 2)),
        ("no zero", torch.ones(3, 2, 4, 4)),
        ("linear layer outputs (N, C)", torch.relu(torch.randn(6, 5, generator=generator))),
    ]
    cases = [Case(label, (a,), neurons.apoz(a)) for label, a in activations]
    run_check("apoz", apoz, cases)


def check_get_num_channels_to_keep(get_num_channels_to_keep: Callable[[int, float], int]) -> None:
    """Lab 03: ``round((1 - prune_ratio) * channels)`` channels, at least one."""

    arguments = [(32, 0.3), (64, 0.5), (10, 0.0), (3, 0.9), (1, 0.5), (128, 0.25), (7, 0.7)]
    cases = [Case(f"channels={c}, prune_ratio={r}", (c, r),
                  channels.get_num_channels_to_keep(c, r)) for c, r in arguments]
    run_check("get_num_channels_to_keep", get_num_channels_to_keep, cases)


def check_input_channel_importance(
    get_input_channel_importance: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Lab 03: the L2 norm of each input channel (dim 1) of a conv or linear weight."""

    generator = torch.Generator().manual_seed(0)
    weights = [
        ("the lecture's 2x2 linear weight", torch.tensor([[3.0, -2.0], [1.0, -5.0]])),
        ("conv weight 4x3x3x3", torch.randn(4, 3, 3, 3, generator=generator)),
        ("conv weight with a zero input channel",
         torch.randn(2, 3, 1, 1, generator=generator) * torch.tensor([1.0, 0.0, 1.0])[:, None,
                                                                                      None]),
        ("linear weight 10x6", torch.randn(10, 6, generator=generator)),
    ]
    cases = [Case(label, (w,), channels.get_input_channel_importance(w)) for label, w in weights]
    run_check("get_input_channel_importance", get_input_channel_importance, cases,
              tolerance=1e-5)


def _all_tensors(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])


def _channel_orders(original: VGG, result: VGG) -> tuple[tuple[int, ...], ...]:
    """Which original channel each channel of ``result`` is, conv by conv (found by its
    BatchNorm running mean, which the check makes distinct)."""

    orders = []
    for _, bn in channels.conv_blocks(original):
        before = getattr(original.backbone, bn).running_mean
        after = getattr(result.backbone, bn).running_mean
        orders.append(tuple(int((before - value).abs().argmin()) for value in after))
    return tuple(orders)


def check_channel_sorting(apply_channel_sorting: Callable[[VGG], VGG]) -> None:
    """Lab 03: sorting returns a new model whose channels are ordered by importance."""

    def channel_orders(model: VGG) -> tuple[tuple[int, ...], ...]:
        before = _all_tensors(model)
        result = apply_channel_sorting(model)
        if not torch.equal(_all_tensors(model), before):
            raise ValueError("the input model was changed: sort a copy (copy.deepcopy)")
        images = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            if not torch.allclose(result.eval()(images), model(images), atol=1e-4):
                raise ValueError("the sorted model computes something else than the input: "
                                 "permute conv, BatchNorm and the next layer's input together")
        return _channel_orders(model, result)

    torch.manual_seed(0)
    models = [("VGG (4, M, 8)", (4, "M", 8)), ("VGG (6, 5, M, 7)", (6, 5, "M", 7)),
              ("digits-sized VGG", (32, 32, "M", 64, 64, "M"))]
    cases = []
    for label, widths in models:
        model = randomize_batchnorms(VGG(widths))
        expected = _channel_orders(model, channels.apply_channel_sorting(model))
        cases.append(Case(label, (model,), expected))
    run_check("apply_channel_sorting", channel_orders, cases)


def check_sparsity_budget(sparsities: dict, model: nn.Module, budget: float = 0.25) -> None:
    """Lab 04: a sparsity for every prunable layer, each in [0, 1), the pruned model's
    non-zero size within ``budget`` of the dense size."""

    layers = sorted(measure.prunable_layers(model))

    def size_within_budget() -> str:
        fraction = sensitivity.size_fraction(model, sparsities)
        return "within budget" if fraction <= budget else f"{fraction:.4f} of the dense size"

    properties = [
        Case("a sparsity for every prunable layer, named as in prunable_layers(model)",
             (lambda: sorted(sparsities),), layers),
        Case("every sparsity a number in [0, 1)",
             (lambda: all(isinstance(s, (int, float)) and 0 <= s < 1
                          for s in sparsities.values()),), True),
        Case(f"pruned size at most {budget:.0%} of the dense size", (size_within_budget,),
             "within budget"),
    ]
    run_check("sparsity_budget", lambda check: check(), properties)


# --- Lab 06: the prune-finetune loop (AGP schedule, iterative pruning) ------------------


def check_agp_sparsity(agp_sparsity: Callable[[int, int, float, float], float]) -> None:
    """Lab 06: ``agp_sparsity(t, n, s_initial, s_final)``, the cubic schedule of Zhu and
    Gupta 2017, ``s_f + (s_i - s_f) * (1 - t / n) ** 3``."""

    arguments = [
        ("t = 0 starts at s_initial", (0, 10, 0.0, 0.9)),
        ("t = n ends at s_final", (10, 10, 0.0, 0.9)),
        ("half way, t = 5 of 10", (5, 10, 0.0, 0.9)),
        ("s_initial above zero, t = 1 of 4", (1, 4, 0.2, 0.8)),
        ("s_initial above zero, t = 3 of 4", (3, 4, 0.2, 0.8)),
        ("a single step, n = 1, t = 1", (1, 1, 0.3, 0.95)),
        ("s_initial = s_final stays put", (2, 3, 0.5, 0.5)),
        ("a long schedule, t = 17 of 100", (17, 100, 0.05, 0.98)),
    ]
    cases = [Case(label, args, schedule.agp_sparsity(*args)) for label, args in arguments]
    run_check("agp_sparsity", agp_sparsity, cases)


def _iterative_prune_observations(iterative_prune: Callable, sparsities: list[float]) -> dict:
    """Run ``iterative_prune`` on a tiny MLP and 192 digits; return what the check looks at."""


    splits = data.load("digits")
    images, labels = splits.train.tensors
    train_loader = DataLoader(TensorDataset(images[:192], labels[:192]), batch_size=64,
                              shuffle=True, generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(splits.val, batch_size=512)
    torch.manual_seed(0)
    model = MLP(64, (32,), 10)
    original = {name: value.clone() for name, value in model.state_dict().items()}
    pruned, accuracies = iterative_prune(model, list(sparsities), train_loader, val_loader, 1)
    weights = [layer.weight.detach() for layer in measure.prunable_layers(pruned).values()]
    before = [layer.weight.detach() for layer in measure.prunable_layers(model).values()]
    return {
        "layer sparsities": [round(measure.get_sparsity(w), 4) for w in weights],
        "accuracies": len(accuracies),
        "last accuracy": math.isclose(accuracies[-1], evaluate(pruned, val_loader)),
        "new model": pruned is not model,
        "input unchanged": all(torch.equal(value, original[name])
                               for name, value in model.state_dict().items()),
        "finetuned": any(not torch.equal(w[w != 0], b[w != 0]) for w, b in zip(weights, before,
                                                                              strict=True)),
    }


def check_iterative_prune(iterative_prune: Callable) -> None:
    """Lab 06: ``iterative_prune(model, sparsities, train_loader, val_loader,
    epochs_per_step)`` returns ``(a new pruned model, one validation accuracy per step)``,
    keeps its masks through finetuning and leaves ``model`` alone."""
    lecture_steps = [0.3, 0.6, 0.9]
    sizes = (64 * 32, 32 * 10)

    runs: dict[tuple[float, ...], dict] = {}

    def observe(sparsities: list[float], what: str) -> Any:
        if tuple(sparsities) not in runs:
            runs[tuple(sparsities)] = _iterative_prune_observations(iterative_prune, sparsities)
        return runs[tuple(sparsities)][what]

    cases = [
        Case("one step to 50%: sparsity of each layer after finetuning",
             ([0.5], "layer sparsities"), [0.5, 0.5]),
        Case("steps 30, 60, 90%: sparsity of each layer after finetuning (masks kept?)",
             (lecture_steps, "layer sparsities"), [round(round(n * 0.9) / n, 4) for n in sizes]),
        Case("steps 30, 60, 90%: number of validation accuracies returned",
             (lecture_steps, "accuracies"), len(lecture_steps)),
        Case("the last accuracy is the returned model's validation accuracy",
             (lecture_steps, "last accuracy"), True),
        Case("a new model is returned", (lecture_steps, "new model"), True),
        Case("the input model is left unchanged", (lecture_steps, "input unchanged"), True),
        Case("the surviving weights were finetuned", (lecture_steps, "finetuned"), True),
    ]
    run_check("iterative_prune", observe, cases)


# --- Lab 05: automatic pruning (AMC's budget rule) ---------------------------------------


def check_limit_ratio(limit_ratio: Callable[..., float]) -> None:
    """Lab 05: AMC's budget rule ``min(max(ratio, r_min, 0), max_ratio)`` with
    ``r_min = 1 - (budget_macs - fixed_macs) / reducible_macs``."""

    settings = [
        ("within the budget: unchanged", 0.3, 80, 40, 100, 0.8),
        ("prunes too little: raised to r_min", 0.0, 80, 40, 100, 0.8),
        ("exactly r_min", 0.25, 80, 40, 100, 0.8),
        ("prunes too much: capped at max_ratio", 0.95, 80, 40, 100, 0.8),
        ("negative action: raised to r_min", -0.3, 80, 40, 100, 0.8),
        ("loose budget, negative action: never below 0", -0.3, 50, 10, 100, 0.8),
        ("budget out of reach: still capped at max_ratio", 0.1, 100, 90, 95, 0.5),
        ("MAC counts of a VGG layer", 0.1, 884_736, 163_840, 746_816, 0.8),
    ]
    cases = []
    for label, ratio, reducible, fixed, budget, max_ratio in settings:
        kwargs = {"reducible_macs": reducible, "fixed_macs": fixed, "budget_macs": budget,
                  "max_ratio": max_ratio}
        cases.append(Case(label, (ratio,), amc.limit_ratio(ratio, **kwargs), kwargs))
    run_check("limit_ratio", limit_ratio, cases)
