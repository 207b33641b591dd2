"""Checks of lab 02: row norms, the Hessian diagonal, OBD and network slimming."""

from __future__ import annotations

import torch
from torch import nn

from labkit.grading.checks.core import Case, Check, close, show
from labkit.grading.checks.granularity import weights
from labkit.models import VGG
from labkit.pruning import criteria

LECTURE = torch.tensor([[3.0, -2.0], [1.0, -5.0]])


def _row_norm_cases() -> list[Case]:
    cases = [
        ("the lecture's [[3, -2], [1, -5]], L1: 5 and 6", LECTURE, 1),
        ("the lecture's [[3, -2], [1, -5]], L2: sqrt(13) and sqrt(26)", LECTURE, 2),
        ("a linear weight with a zero row, L1", torch.tensor([[0.0, 0.0], [1.5, -2.5]]), 1),
        ("a 6x10 linear weight, L2", weights(0, 6, 10), 2),
        ("a 4x3x3x3 conv weight: one norm per output channel, L1", weights(1, 4, 3, 3, 3), 1),
        ("a 4x3x3x3 conv weight, L2", weights(1, 4, 3, 3, 3), 2),
    ]
    return [Case(label, (w, p)) for label, w, p in cases]


def _hidden_row_norm(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for p in (1, 2, 1, 2):
        shape = tuple(int(d) for d in torch.randint(1, 7, (int(torch.randint(2, 5, (1,),
                                                                    generator=generator)),),
                                                    generator=generator))
        cases.append(Case(f"random {shape} weight, L{p}",
                          (torch.randn(shape, generator=generator), p)))
    return cases


ROW_NORM = Check(
    name="row_norm",
    reference=criteria.row_norm,
    cases=_row_norm_cases,
    hidden=_hidden_row_norm,
    compare=close(),
    replaces=("labkit.pruning.criteria.row_norm",),
    conventions=("float32", "(weight.shape[0],)", "not change"),
)


def _classifier_loss(seed: int, samples: int, features: int, classes: int):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, features, generator=generator)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    weight = torch.randn(classes, features, generator=generator).requires_grad_()
    return nn.functional.cross_entropy(inputs @ weight.T, labels), weight


def _tanh_network_loss(seed: int):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(10, 4, generator=generator)
    labels = torch.randint(0, 2, (10,), generator=generator)
    weight = torch.randn(3, 4, generator=generator).requires_grad_()
    head = torch.randn(2, 3, generator=generator)
    return nn.functional.cross_entropy(torch.tanh(inputs @ weight.T) @ head.T, labels), weight


def _hessian_cases() -> list[Case]:
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, -2.0], [0.0, -2.0, 5.0]])
    w = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)
    v = torch.tensor([[0.5, -1.0], [2.0, 0.1]], requires_grad=True)
    losses = [
        ("quadratic 1/2 w^T A w + b^T w: the diagonal of A",
         0.5 * w @ a @ w + torch.tensor([1.0, -1.0, 2.0]) @ w, w),
        ("sum of v^3 over a 2x2 weight: 6 v", (v**3).sum(), v),
        ("softmax regression, 3x5 weight", *_classifier_loss(0, 12, 5, 3)),
        ("tanh layer under a fixed head, 3x4 weight", *_tanh_network_loss(1)),
    ]
    return [Case(label, (loss, p)) for label, loss, p in losses]


def _hidden_hessian(seed: int) -> list[Case]:
    return [Case("random softmax regression, 4x6 weight", _classifier_loss(seed, 9, 6, 4)),
            Case("random tanh layer under a fixed head", _tanh_network_loss(seed + 1))]


HESSIAN_DIAGONAL = Check(
    name="hessian_diagonal",
    reference=criteria.exact_hessian_diagonal,
    cases=_hessian_cases,
    hidden=_hidden_hessian,
    compare=close(),
    pure=False,
    replaces=("labkit.pruning.criteria.exact_hessian_diagonal",),
    conventions=("float32", "parameter's shape"),
)


def _obd_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    pairs = [
        ("three weights", torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 4.0])),
        ("a zero weight costs nothing", torch.tensor([0.0, 3.0]), torch.tensor([9.0, 1.0])),
        ("negative curvature", torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.0])),
        ("a 2x3x3x3 conv weight", torch.randn(2, 3, 3, 3, generator=generator),
         torch.rand(2, 3, 3, 3, generator=generator)),
    ]
    return [Case(label, (w, h)) for label, w, h in pairs]


def _hidden_obd(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    return [Case("random 5x7 weight and curvature",
                 (torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)))]


OBD_IMPORTANCE = Check(
    name="obd_importance",
    reference=criteria.obd_importance,
    cases=_obd_cases,
    hidden=_hidden_obd,
    compare=close(),
    replaces=("labkit.pruning.criteria.obd_importance",),
    conventions=("element-wise", "not change"),
)


def _penalty_and_gradient(slimming_penalty, case: Case) -> torch.Tensor:
    """The penalty followed by its gradient with respect to every BatchNorm scale."""
    model, strength = case.args
    penalty = slimming_penalty(model, strength)
    if not isinstance(penalty, torch.Tensor) or not penalty.requires_grad:
        raise TypeError("the penalty must be a tensor that autograd can differentiate, got "
                        f"{show(penalty)} (keep it a tensor: no .item() or float())")
    gammas = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gradients = torch.autograd.grad(penalty, gammas)
    return torch.cat([penalty.detach().reshape(1), *(g.flatten() for g in gradients)])


def _vgg_with_gammas(widths: tuple, gammas: list[torch.Tensor]) -> VGG:
    torch.manual_seed(0)
    model = VGG(widths)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn, gamma in zip(bns, gammas, strict=False):
            bn.weight.copy_(gamma)
    return model


def _slimming_cases() -> list[Case]:
    models = [("fresh VGG, gamma = 1", _vgg_with_gammas((4, "M", 8), [])),
              ("VGG with negative and zero gammas",
               _vgg_with_gammas((4, "M", 6), [torch.tensor([0.5, -1.0, 2.0, 0.0]),
                                              torch.linspace(-1.0, 1.5, 6)]))]
    return [Case(f"{label}, strength {strength}", (model, strength))
            for label, model in models for strength in (1e-4, 0.1, 0.0)]


def _hidden_slimming(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    model = _vgg_with_gammas((3, "M", 5), [torch.randn(3, generator=generator),
                                           torch.randn(5, generator=generator)])
    return [Case("random gammas, strength 0.03", (model, 0.03))]


SLIMMING_PENALTY = Check(
    name="slimming_penalty",
    reference=criteria.slimming_penalty,
    cases=_slimming_cases,
    hidden=_hidden_slimming,
    observe=_penalty_and_gradient,
    compare=close(),
    pure=False,
    replaces=("labkit.pruning.criteria.slimming_penalty",),
    conventions=("scalar tensor", "autograd"),
)
