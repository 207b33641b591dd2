"""A small VGG finetuned on the digits, and a digest of its weights: what the tests of
training's repeatability compare, in the test's process and in another one, which imports
this module to compute the same digest."""

import hashlib

import torch

from labkit import training
from labkit.models import VGG


def tiny_model():
    torch.manual_seed(0)
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
