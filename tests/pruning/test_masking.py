import pytest
import torch
from torch import nn

from labkit import training
from labkit.models import MLP
from labkit.pruning.channels import conv_blocks
from labkit.pruning.granularity import channel_mask, fine_grained_mask, mask_from_scores
from labkit.pruning.masking import (
    Pruner,
    accuracy_by_sparsity,
    apply_masks,
    batchnorm_pairs,
    slimming_accuracy,
    slimming_masks,
)
from tests.support.tiny_models import tiny_loader, tiny_vgg


def half_masks(model):
    return {"backbone.conv1.weight": fine_grained_mask(model.backbone.conv1.weight, 0.5),
            "classifier.weight": fine_grained_mask(model.classifier.weight, 0.75)}


def test_apply_zeroes_exactly_the_masked_weights():
    model = tiny_vgg()
    masks = half_masks(model)
    kept = model.backbone.conv1.weight.detach()[masks["backbone.conv1.weight"]].clone()
    Pruner(model, masks).apply()
    weight = model.backbone.conv1.weight.detach()
    assert (weight[~masks["backbone.conv1.weight"]] == 0).all()
    assert torch.equal(weight[masks["backbone.conv1.weight"]], kept)
    assert (model.classifier.weight == 0).sum().item() == 18


@pytest.mark.parametrize("with_pruner", [True, False])
def test_masks_survive_sgd_with_momentum_and_weight_decay(with_pruner):
    model = tiny_vgg()
    masks = half_masks(model)
    pruner = Pruner(model, masks)
    pruner.apply()
    steps = []
    history = training.train(
        model, tiny_loader(), epochs=5, lr=0.05, momentum=0.9, weight_decay=5e-4,
        after_step=[pruner, lambda: steps.append(1)] if with_pruner else [lambda: steps.append(1)],
        progress=False)
    assert len(steps) == 50 and len(history.train_loss) == 5
    zeros_where_pruned = [(model.get_parameter(name)[~mask] == 0).all().item()
                          for name, mask in masks.items()]
    assert all(zeros_where_pruned) == with_pruner
    if with_pruner:
        assert pruner.sparsity() == {"backbone.conv1.weight": 0.5, "classifier.weight": 0.75}


def test_pruner_is_an_after_step_callback():
    model = tiny_vgg()
    pruner = Pruner(model, half_masks(model))
    pruner()
    assert pruner.sparsity()["classifier.weight"] == 0.75


def test_sparsity_report_lists_every_masked_parameter():
    model = tiny_vgg()
    pruner = Pruner(model, half_masks(model))
    assert pruner.sparsity() == {"backbone.conv1.weight": 0.0, "classifier.weight": 0.0}
    pruner.apply()
    report = pruner.report().splitlines()
    assert len(report) == 3
    assert report[1].split() == ["backbone.conv1.weight", "(8,", "4,", "3,", "3)", "144",
                                 "50.0%"]
    assert report[2].split()[-2:] == ["18", "75.0%"]


def test_from_sparsity_with_one_number_prunes_every_prunable_layer():
    model = tiny_vgg()
    pruner = Pruner.from_sparsity(model, 0.5, granularity="channel")
    assert set(pruner.masks) == {"backbone.conv0.weight", "backbone.conv1.weight",
                                 "classifier.weight"}
    assert torch.equal(pruner.masks["backbone.conv1.weight"],
                       channel_mask(model.backbone.conv1.weight, 0.5))
    pruner.apply()
    assert pruner.sparsity() == {"backbone.conv0.weight": 0.5, "backbone.conv1.weight": 0.5,
                                 "classifier.weight": pytest.approx(2 / 3)}


def test_from_sparsity_with_a_dict_prunes_only_the_named_layers():
    model = tiny_vgg()
    pruner = Pruner.from_sparsity(model, {"backbone.conv1": 0.25}, granularity="pattern")
    assert list(pruner.masks) == ["backbone.conv1.weight"]
    pruner.apply()
    assert pruner.sparsity() == {"backbone.conv1.weight": 0.25}


def test_from_sparsity_rejects_unknown_layers_and_granularities():
    model = tiny_vgg()
    with pytest.raises(ValueError, match=r"sparsity names layers \['backbone.bn0'\]"):
        Pruner.from_sparsity(model, {"backbone.bn0": 0.5})
    with pytest.raises(ValueError, match="granularity must be one of"):
        Pruner.from_sparsity(model, 0.5, granularity="block")
    with pytest.raises(ValueError, match="sparsity must be in"):
        Pruner.from_sparsity(model, 1.2)


def test_pruner_rejects_bad_masks():
    model = tiny_vgg()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Pruner("model", {})
    with pytest.raises(ValueError, match="does not have"):
        Pruner(model, {"backbone.conv9.weight": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(TypeError, match="must be a torch.bool tensor, got torch.float32"):
        Pruner(model, {"classifier.weight": torch.ones(3, 8)})
    with pytest.raises(ValueError, match=r"has shape \(8, 3\), the parameter \(3, 8\)"):
        Pruner(model, {"classifier.weight": torch.ones(8, 3, dtype=torch.bool)})


def test_apply_masks_returns_a_pruned_copy_and_leaves_the_model_alone():
    model = tiny_vgg()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = apply_masks(model, half_masks(model))
    assert pruned is not model
    assert (pruned.classifier.weight == 0).sum().item() == 18
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_slimming_masks_prune_the_smallest_gammas_across_layers():
    model = tiny_vgg().eval()
    with torch.no_grad():
        model.backbone.bn0.weight.copy_(torch.tensor([0.1, 2.0, -0.05, 3.0]))
        model.backbone.bn1.weight.copy_(torch.tensor([1.0, -0.2, 0.3, 4.0, 5.0, 0.01, 6.0, 7.0]))
    masks = slimming_masks(model, 0.5)
    assert masks["backbone.bn0.weight"].tolist() == [False, True, False, True]
    assert masks["backbone.bn1.weight"].tolist() == [False, False, False, True, True, False,
                                                     True, True]
    assert torch.equal(masks["backbone.bn1.bias"], masks["backbone.bn1.weight"])
    assert masks["backbone.conv1.weight"].shape == (8, 4, 3, 3)
    assert torch.equal(masks["backbone.conv1.weight"].flatten(1).all(dim=1),
                       masks["backbone.bn1.weight"])
    pruned = apply_masks(model, masks)
    features = pruned.backbone[:3](torch.randn(5, 1, 4, 4))
    assert (features[:, [0, 2]] == 0).all() and (features[:, [1, 3]] != 0).any()


def test_slimming_masks_need_batchnorm_after_a_matching_layer():
    with pytest.raises(ValueError, match="model has no BatchNorm layer"):
        slimming_masks(MLP(16, (8,), 3), 0.5)
    with pytest.raises(ValueError, match="not of a conv or linear layer: it cannot be paired"):
        slimming_masks(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)), 0.5)


def test_channel_removal_pairs_convs_and_batchnorms_as_slimming_does():
    model = tiny_vgg()
    pairs = batchnorm_pairs(model)
    assert pairs == {"backbone.bn0": "backbone.conv0", "backbone.bn1": "backbone.conv1"}
    assert {f"backbone.{bn}": f"backbone.{conv}"
            for conv, bn in conv_blocks(model)} == pairs


def test_accuracy_by_sparsity_masks_each_criterion_at_each_sparsity():
    model, loader = tiny_vgg().eval(), tiny_loader()
    weight = model.classifier.weight
    scores = {"magnitude": {"classifier.weight": weight.detach().abs()},
              "reversed": {"classifier.weight": -weight.detach().abs()}}
    frame = accuracy_by_sparsity(model, scores, [0.0, 0.5, 0.9], loader)
    assert frame.index.name == "criterion" and list(frame.index) == ["magnitude", "reversed"]
    assert list(frame.columns) == [0.0, 0.5, 0.9]
    dense = training.evaluate(model, loader)
    assert frame.loc["magnitude", 0.0] == frame.loc["reversed", 0.0] == dense
    kept = mask_from_scores(-weight.detach().abs(), 0.5)
    assert frame.loc["reversed", 0.5] == training.evaluate(
        apply_masks(model, {"classifier.weight": kept}), loader)
    with pytest.raises(ValueError, match=r"sparsities must be in \[0, 1\), got 1.0"):
        accuracy_by_sparsity(model, scores, [0.5, 1.0], loader)
    with pytest.raises(ValueError, match="at least one sparsity"):
        accuracy_by_sparsity(model, scores, [], loader)


def test_slimming_accuracy_prunes_each_model_by_its_own_gammas():
    loader = tiny_loader()
    models = {"a": tiny_vgg(0).eval(), "b": tiny_vgg(1).eval()}
    frame = slimming_accuracy(models, [0.25, 0.5], loader)
    assert frame.index.name == "model" and list(frame.index) == ["a", "b"]
    for label, model in models.items():
        for sparsity in (0.25, 0.5):
            assert frame.loc[label, sparsity] == training.evaluate(
                apply_masks(model, slimming_masks(model, sparsity)), loader)
    with pytest.raises(ValueError, match=r"sparsities must be in \[0, 1\)"):
        slimming_accuracy(models, [-0.1], loader)
