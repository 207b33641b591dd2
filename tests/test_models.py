import pytest
import torch

from labkit import device
from labkit.models import (
    CIFAR_WIDTHS,
    MLP,
    VGG,
    DenseNet,
    MobileNetV2,
    randomize_batchnorms,
    with_parameters,
)


def test_vgg_layer_names_and_shapes():
    model = VGG((8, "M", 16), in_channels=1, num_classes=10)
    names = [name for name, _ in model.backbone.named_children()]
    assert names == ["conv0", "bn0", "relu0", "pool0", "conv1", "bn1", "relu1"]
    assert model.classifier.in_features == 16
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cifar_vgg_matches_the_original_lab():
    model = VGG(CIFAR_WIDTHS, in_channels=3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_mlp_shapes():
    assert MLP(64, (32, 16), 10)(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("widths", [("M",), (8, 0), (8, "X")])
def test_vgg_bad_widths(widths):
    with pytest.raises(ValueError, match="widths"):
        VGG(widths)


def test_mlp_bad_hidden():
    with pytest.raises(ValueError, match="hidden"):
        MLP(64, (0,))


def test_device_is_cpu_without_cuda():
    assert device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_randomize_batchnorms_moves_every_statistic_off_its_default():
    torch.manual_seed(0)
    model = randomize_batchnorms(VGG((4, "M", 8)).train())
    assert not model.training
    for bn in (model.backbone.bn0, model.backbone.bn1):
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert bn.bias.abs().max() > 0 and bn.running_mean.abs().max() > 0


def test_mobilenet_v2_blocks_follow_the_paper():
    model = MobileNetV2()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    first, second = model.blocks[0], model.blocks[1]
    assert not hasattr(first.layers, "expand") and first.residual
    assert second.layers.expand.out_channels == 4 * 8 and not second.residual
    assert second.layers.depthwise.groups == second.layers.depthwise.in_channels == 32
    assert model.blocks[2].residual


def test_densenet_concatenates_every_layer_onto_its_input():
    model = DenseNet((2, 2), growth=4)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert [layer.layers.conv1.in_channels for layer in model.features if
            hasattr(layer, "layers")] == [8, 12, 8, 12]
    assert model.bn.num_features == model.classifier.in_features == 16


@pytest.mark.parametrize("build", [lambda: MobileNetV2(()), lambda: MobileNetV2(((8, 0, 1),)),
                                   lambda: MobileNetV2(stem=0), lambda: DenseNet(()),
                                   lambda: DenseNet((2,), growth=0)])
def test_mobilenet_and_densenet_refuse_bad_sizes(build):
    with pytest.raises(ValueError, match="must be"):
        build()


def test_with_parameters_copies_the_model_with_reshaped_values():
    torch.manual_seed(0)
    model = VGG((4, "M", 8), in_channels=1, num_classes=10)
    before = model.backbone.conv1.weight.detach().clone()
    matrix = torch.arange(8 * 4 * 9, dtype=torch.float32).reshape(8, 36)
    changed = with_parameters(model, {"backbone.conv1.weight": matrix})
    assert torch.equal(changed.backbone.conv1.weight, matrix.reshape(8, 4, 3, 3))
    assert torch.equal(model.backbone.conv1.weight, before)
    assert torch.equal(changed.backbone.conv0.weight, model.backbone.conv0.weight)
    assert changed.backbone.conv0.weight is not model.backbone.conv0.weight
    with pytest.raises(ValueError, match="values names a parameter 'backbone.conv9.weight'"):
        with_parameters(model, {"backbone.conv9.weight": matrix})
    with pytest.raises(ValueError, match=r"must be a tensor of 288 elements \(shape "
                                         r"\(8, 4, 3, 3\)\), got \(8, 35\)"):
        with_parameters(model, {"backbone.conv1.weight": matrix[:, :35]})
