import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from labkit import training, zoo
from labkit.grading import checks
from labkit.models import MLP, VGG
from labkit.pruning import criteria
from labkit.pruning.granularity import fine_grained_mask, mask_from_scores
from labkit.pruning.masking import apply_masks


def tiny_data(n=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 1, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    return TensorDataset(inputs, labels)


def tiny_vgg():
    torch.manual_seed(0)
    return VGG((4, "M", 4), in_channels=1, num_classes=3).eval()


def test_magnitude_is_the_absolute_value():
    weight = torch.tensor([[3.0, -2.0], [1.0, -5.0]], requires_grad=True)
    assert criteria.magnitude(weight).tolist() == [[3.0, 2.0], [1.0, 5.0]]
    assert not criteria.magnitude(weight).requires_grad


def test_row_norms_of_the_lecture_example():
    weight = torch.tensor([[3.0, -2.0], [1.0, -5.0]])
    assert criteria.row_norm(weight, p=1).tolist() == [5.0, 6.0]
    assert torch.allclose(criteria.row_norm(weight, p=2),
                          torch.tensor([math.sqrt(13), math.sqrt(26)]))
    assert criteria.row_norm(weight, p=math.inf).tolist() == [3.0, 5.0]


def test_row_norm_of_a_conv_weight_is_over_each_output_channel():
    weight = torch.arange(24.0).reshape(2, 3, 2, 2)
    assert torch.allclose(criteria.row_norm(weight, 1), weight.flatten(1).abs().sum(dim=1))


@pytest.mark.parametrize("p", [0.5, 0, -1, "2", True])
def test_row_norm_rejects_a_bad_p(p):
    with pytest.raises(ValueError, match=r"p must be a real number >= 1"):
        criteria.row_norm(torch.ones(2, 2), p)


def test_row_norm_needs_rows():
    with pytest.raises(ValueError, match="weight must have rows"):
        criteria.row_norm(torch.ones(3), 2)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        criteria.row_norm([[1.0]], 2)


def test_random_importance_repeats_with_its_seed():
    weight = torch.ones(5, 5)
    first = criteria.random_importance(weight, seed=1)
    assert first.shape == weight.shape
    assert torch.equal(first, criteria.random_importance(weight, seed=1))
    assert not torch.equal(first, criteria.random_importance(weight, seed=2))


def test_scaling_factors_are_absolute_gammas_by_batchnorm_name():
    model = tiny_vgg()
    with torch.no_grad():
        model.backbone.bn0.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
    factors = criteria.scaling_factors(model)
    assert list(factors) == ["backbone.bn0", "backbone.bn1"]
    assert factors["backbone.bn0"].tolist() == [1.0, 2.0, 0.5, 0.0]


def test_slimming_penalty_is_strength_times_the_l1_norm_of_every_gamma():
    model = tiny_vgg()
    with torch.no_grad():
        model.backbone.bn0.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
        model.backbone.bn1.weight.fill_(-1.0)
    penalty = criteria.slimming_penalty(model, strength=0.1)
    assert penalty.item() == pytest.approx(0.1 * (3.5 + 4.0))
    penalty.backward()
    assert model.backbone.bn1.weight.grad.tolist() == pytest.approx([-0.1] * 4)


def test_slimming_penalty_as_extra_loss_shrinks_the_gammas():
    loader = DataLoader(tiny_data(), batch_size=8)
    gamma_sums = []
    for extra_loss in (None, partial(criteria.slimming_penalty, strength=0.5)):
        model = tiny_vgg()
        training.train(model, loader, epochs=3, lr=0.05, extra_loss=extra_loss,
                       progress=False)
        gamma_sums.append(sum(g.sum().item() for g in criteria.scaling_factors(model).values()))
    assert gamma_sums[1] < 0.9 * gamma_sums[0]


def test_slimming_needs_batchnorm_and_a_non_negative_strength():
    with pytest.raises(ValueError, match="model has no BatchNorm layer"):
        criteria.slimming_penalty(MLP(16, (8,), 3))
    with pytest.raises(ValueError, match=r"strength must be a finite number in \[0, inf\]"):
        criteria.slimming_penalty(tiny_vgg(), strength=-1.0)


def test_exact_hessian_diagonal_of_a_quadratic_is_the_diagonal_of_its_matrix():
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, -2.0], [0.0, -2.0, 5.0]])
    b = torch.tensor([1.0, -1.0, 2.0])
    w = torch.tensor([0.3, -0.7, 1.1], requires_grad=True)
    loss = 0.5 * w @ a @ w + b @ w
    assert torch.allclose(criteria.exact_hessian_diagonal(loss, w), torch.diagonal(a))
    assert torch.allclose(criteria.exact_hessian_diagonal(loss, w, chunk_size=2),
                          torch.diagonal(a))
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1, got 0"):
        criteria.exact_hessian_diagonal(loss, w, chunk_size=0)


def test_exact_hessian_diagonal_of_a_linear_loss_is_zero():
    w = torch.ones(3, requires_grad=True)
    assert criteria.exact_hessian_diagonal((2 * w).sum(), w).tolist() == [0.0, 0.0, 0.0]


def tiny_network_loss(weight, data):
    inputs, labels = data.tensors
    hidden = torch.tanh(inputs.flatten(1)[:, :6] @ weight.T)
    return F.cross_entropy(hidden, labels)


def test_exact_hessian_diagonal_matches_torch_autograd_hessian():
    data = tiny_data(16)
    weight = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    diagonal = criteria.exact_hessian_diagonal(tiny_network_loss(weight, data), weight)
    full = torch.autograd.functional.hessian(lambda w: tiny_network_loss(w, data), weight)
    assert torch.allclose(diagonal, torch.diagonal(full.reshape(18, 18)).reshape(3, 6),
                          atol=1e-6)


def test_exact_hessian_diagonal_of_a_model_layer_matches_torch_autograd_hessian():
    model = tiny_vgg()
    data = tiny_data(16)
    loss = criteria.dataset_loss(model, DataLoader(data, batch_size=8))
    diagonal = criteria.exact_hessian_diagonal(loss, model.classifier.weight)

    def loss_of(weight):
        features = model.backbone(data.tensors[0]).mean(dim=(2, 3))
        return F.cross_entropy(F.linear(features, weight, model.classifier.bias),
                               data.tensors[1])

    full = torch.autograd.functional.hessian(loss_of, model.classifier.weight.detach())
    assert torch.allclose(diagonal, torch.diagonal(full.reshape(12, 12)).reshape(3, 4),
                          atol=1e-5)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    loss = (torch.tensor([2.0, 5.0, 0.5]) * w**2).sum()
    estimate = criteria.hutchinson_hessian_diagonal(loss, {"w": w}, samples=3, seed=0)
    assert torch.allclose(estimate["w"], torch.tensor([4.0, 10.0, 1.0]))


def test_hutchinson_is_close_to_exact_on_a_tiny_model():
    """Within 4 standard deviations of exact everywhere: the estimator's variance for
    ``h_ii`` is ``sum_{j != i} h_ij^2 / samples`` (Rademacher probes)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 6, generator=generator)
    labels = torch.randint(0, 3, (16,), generator=generator)

    def loss_of(w):
        hidden = torch.tanh(inputs @ w[:24].reshape(4, 6).T)
        return F.cross_entropy(hidden @ w[24:].reshape(3, 4).T, labels)

    w = torch.randn(36, generator=generator, requires_grad=True)
    samples = 400
    estimate = criteria.hutchinson_hessian_diagonal(loss_of(w), {"w": w}, samples=samples)["w"]
    hessian = torch.autograd.functional.hessian(loss_of, w.detach())
    exact = torch.diagonal(hessian)
    assert torch.allclose(criteria.exact_hessian_diagonal(loss_of(w), w), exact, atol=1e-6)
    deviation = ((hessian**2).sum(dim=1) - exact**2).div(samples).sqrt()
    assert ((estimate - exact).abs() <= 4 * deviation).all()
    assert (estimate - exact).norm() / exact.norm() < 0.15


def test_hutchinson_repeats_with_its_seed_and_needs_samples():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = (w[0] * w[1]) ** 2 + w[0] ** 3
    first = criteria.hutchinson_hessian_diagonal(loss, {"w": w}, samples=5, seed=3)
    again = criteria.hutchinson_hessian_diagonal(loss, {"w": w}, samples=5, seed=3)
    assert torch.equal(first["w"], again["w"])
    with pytest.raises(ValueError, match="samples must be an int >= 1, got 0"):
        criteria.hutchinson_hessian_diagonal(loss, {"w": w}, samples=0)
    with pytest.raises(ValueError, match="loss must be a scalar"):
        criteria.hutchinson_hessian_diagonal(w * 2, {"w": w})


@settings(max_examples=30, deadline=None)
@given(shape=st.sampled_from([(3,), (2, 5), (2, 3, 3, 3)]), seed=st.integers(0, 1000))
def test_obd_importance_is_half_h_times_w_squared(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    weight, hessian = torch.randn(shape, generator=generator), torch.rand(shape,
                                                                           generator=generator)
    assert torch.allclose(criteria.obd_importance(weight, hessian), 0.5 * hessian * weight**2)


def test_obd_importance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"hessian_diagonal must have weight's shape \(2, 2\)"):
        criteria.obd_importance(torch.ones(2, 2), torch.ones(4))


def test_taylor_importance_is_the_mean_over_batches_of_abs_weight_times_gradient():
    model = tiny_vgg().train()
    data = tiny_data(16)
    loader = DataLoader(data, batch_size=8)
    scores = criteria.taylor_importance(model, loader)
    assert set(scores) == {"backbone.conv0.weight", "backbone.conv1.weight",
                           "classifier.weight"}
    assert model.training and model.classifier.weight.grad is None
    model.eval()
    expected = torch.zeros_like(model.classifier.weight)
    for inputs, labels in loader:
        loss = F.cross_entropy(model(inputs), labels)
        (gradient,) = torch.autograd.grad(loss, model.classifier.weight)
        expected += (model.classifier.weight * gradient).abs() / 2
    assert torch.allclose(scores["classifier.weight"], expected.detach())


def test_dataset_loss_is_the_mean_cross_entropy_in_eval_mode():
    model = tiny_vgg().train()
    data = tiny_data(20)
    loss = criteria.dataset_loss(model, DataLoader(data, batch_size=7))
    assert model.training
    model.eval()
    assert loss.item() == pytest.approx(F.cross_entropy(model(data.tensors[0]),
                                                        data.tensors[1]).item(), rel=1e-5)


def test_random_pruning_is_worse_than_magnitude_on_the_digits_model(digits):
    model = zoo.pretrained("vgg-digits", progress=False)
    _, val_loader, _ = digits.loaders()
    weights = {f"backbone.conv{i}.weight": model.get_parameter(f"backbone.conv{i}.weight")
               for i in (1, 2, 3)}
    accuracy = {}
    for name, criterion in (("magnitude", criteria.magnitude),
                            ("random", partial(criteria.random_importance, seed=0))):
        masks = {key: mask_from_scores(criterion(w), 0.7) for key, w in weights.items()}
        accuracy[name] = training.evaluate(apply_masks(model, masks), val_loader)
    assert accuracy["magnitude"] > accuracy["random"] + 20
    for w in weights.values():
        assert torch.equal(fine_grained_mask(w, 0.7), mask_from_scores(criteria.magnitude(w), 0.7))


def test_criteria_reject_non_tensors():
    for function in (criteria.magnitude, partial(criteria.random_importance, seed=0)):
        with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
            function(3.0)
    with pytest.raises(TypeError, match="loss must be a torch.Tensor"):
        criteria.exact_hessian_diagonal(1.0, torch.ones(2, requires_grad=True))
    with pytest.raises(ValueError, match="model has no prunable layer"):
        criteria.prunable_weights(nn.ReLU())


def test_lab_checks_pass_labkit_and_reject_wrong_answers(capsys):
    checks.check_row_norm(criteria.row_norm)
    checks.check_hessian_diagonal(criteria.exact_hessian_diagonal)
    checks.check_obd_importance(criteria.obd_importance)
    checks.check_slimming_penalty(criteria.slimming_penalty)
    assert capsys.readouterr().out.splitlines() == [
        "row_norm: 6/6 cases passed", "hessian_diagonal: 4/4 cases passed",
        "obd_importance: 4/4 cases passed", "slimming_penalty: 6/6 cases passed"]
    with pytest.raises(checks.CheckFailed, match="case 'three weights' failed"):
        checks.check_obd_importance(lambda w, h: h * w**2)
    with pytest.raises(checks.CheckFailed, match="a tensor that autograd can differentiate"):
        checks.check_slimming_penalty(
            lambda model, strength: torch.tensor(criteria.slimming_penalty(model, strength).item()))


def test_fisher_diagonal_equals_the_hessian_diagonal_of_the_last_layer():
    """The logits are linear in the last layer's weights: there the Hessian of the
    cross-entropy is its Gauss-Newton matrix, which is the Fisher information."""
    model = tiny_vgg().train()
    loader = DataLoader(tiny_data(24), batch_size=10)
    fisher = criteria.fisher_diagonal(model, loader)
    assert set(fisher) == set(criteria.prunable_weights(model))
    assert model.training
    exact = criteria.exact_hessian_diagonal(criteria.dataset_loss(model, loader),
                                            model.classifier.weight)
    assert torch.allclose(fisher["classifier.weight"], exact, atol=1e-6, rtol=1e-4)
    assert all((value >= 0).all() for value in fisher.values())


def test_fisher_diagonal_of_named_parameters_and_an_empty_loader():
    model = tiny_vgg()
    conv = {"backbone.conv1.weight": model.backbone.conv1.weight}
    fisher = criteria.fisher_diagonal(model, DataLoader(tiny_data(8), batch_size=4), conv)
    assert list(fisher) == ["backbone.conv1.weight"]
    assert fisher["backbone.conv1.weight"].shape == (4, 4, 3, 3)
    assert not fisher["backbone.conv1.weight"].requires_grad
    with pytest.raises(ValueError, match="loader is empty"):
        empty = TensorDataset(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int64))
        criteria.fisher_diagonal(model, DataLoader(empty, batch_size=4))
