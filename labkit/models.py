"""The models the labs prune: a VGG-style CNN and an MLP.

The CNN follows the original lab's VGG (Simonyan and Zisserman 2015): blocks of
conv3x3 -> BatchNorm -> ReLU, max-pooling between stages, global average pooling
and one linear head, no residual connections, so that removing a channel touches
exactly one conv, its BatchNorm and the next conv (or the head). Layers are named
``conv0, bn0, relu0, pool0, conv1, ...`` inside ``model.backbone``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

POOL = "M"

DIGITS_WIDTHS: tuple[int | str, ...] = (32, 32, POOL, 64, 64, POOL)
"""Widths of the digits model: two stages of two convs on 8x8 inputs."""

CIFAR_WIDTHS: tuple[int | str, ...] = (64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512,
                                       POOL)
"""Widths of the original lab's VGG for CIFAR-10 (8 convs)."""


class VGG(nn.Module):
    """VGG-style CNN: ``widths`` lists conv output channels, ``"M"`` a 2x2 max-pool."""

    def __init__(
        self,
        widths: Sequence[int | str] = DIGITS_WIDTHS,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if not any(isinstance(w, int) for w in widths):
            raise ValueError(f"widths must contain at least one conv width, got {widths!r}")
        layers: list[tuple[str, nn.Module]] = []
        channels, conv_index, pool_index = in_channels, 0, 0
        for width in widths:
            if width == POOL:
                layers.append((f"pool{pool_index}", nn.MaxPool2d(2)))
                pool_index += 1
                continue
            if not isinstance(width, int) or width < 1:
                raise ValueError(f"widths entries must be positive ints or 'M', got {width!r}")
            layers += [
                (f"conv{conv_index}", nn.Conv2d(channels, width, 3, padding=1, bias=False)),
                (f"bn{conv_index}", nn.BatchNorm2d(width)),
                (f"relu{conv_index}", nn.ReLU(inplace=True)),
            ]
            channels, conv_index = width, conv_index + 1
        self.widths = tuple(widths)
        self.backbone = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)
        x = x.mean(dim=(2, 3))
        return self.classifier(x)


class MLP(nn.Module):
    """Fully connected network: flatten, then Linear-ReLU for each hidden width."""

    def __init__(self, in_features: int = 64, hidden: Sequence[int] = (128, 64),
                 num_classes: int = 10) -> None:
        super().__init__()
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive ints, got {hidden!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU()]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@torch.no_grad()
def randomize_batchnorms(model: nn.Module) -> nn.Module:
    """Give every BatchNorm2d affine parameters and running statistics like those training
    leaves (a fresh layer has 1, 0, 0, 1, under which channel surgery bugs go unseen).

    Draws from torch's global generator (seed it first); returns ``model`` in eval mode.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()
