"""A tiny VGG and a loader of random 4x4 images for the tests that train or prune a
model in a fraction of a second."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from labkit.models import VGG


def tiny_vgg(seed=0):
    torch.manual_seed(seed)
    return VGG((4, "M", 8), in_channels=1, num_classes=3)


def tiny_loader(n=40, batch_size=4):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 1, 4, 4, generator=generator),
                         torch.randint(0, 3, (n,), generator=generator))
    return DataLoader(data, batch_size=batch_size)
