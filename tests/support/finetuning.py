"""A small VGG for the digits, the model the training and schedule tests train; its weights
after a finetune, and a digest of them, which the tests of training's repeatability
compare in the test's process and in another one that imports this module."""

import hashlib

import torch

from labkit import training
from labkit.models import VGG


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return VGG((8, "M", 16))


def finetuned_state(train_loader, val_loader, seed=0):
    """The weights of :func:`tiny_model` after a 2-epoch finetune with ``seed``."""
    model = tiny_model()
    training.finetune(model, train_loader, val_loader, epochs=2, seed=seed, progress=False)
    return model.state_dict()


def finetune_digest(digits):
    """A digest of the weights after a finetune on a loader that was iterated first."""
    train_loader, val_loader, _ = digits.loaders(64)
    next(iter(train_loader))
    state = finetuned_state(train_loader, val_loader, seed=3)
    return hashlib.sha256(b"".join(value.numpy().tobytes() for value in state.values())
                          ).hexdigest()
