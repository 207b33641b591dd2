"""Training, evaluation and finetuning.

Plain SGD with momentum and weight decay and a cosine learning-rate schedule stepped
once per *epoch* (the original lab stepped it per batch with ``T_max = epochs``,
so its learning rate oscillated). The model kept at the end is the one with the best
*validation* accuracy; the test split is only ever reported.

Finetuning after pruning uses a learning rate 1/10 of training's by default (the
lecture: 1/10 to 1/100 of the original), and accepts ``after_step`` callbacks, which
is how :class:`labkit.pruning.masking.Pruner` keeps pruned weights at zero.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

TRAIN_LR = 0.05
FINETUNE_LR = TRAIN_LR / 10


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in percent."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for inputs, labels in loader:
        outputs = model(inputs.to(device))
        correct += (outputs.argmax(dim=1) == labels.to(device)).sum().item()
        total += labels.numel()
    model.train(was_training)
    return 100.0 * correct / total


@dataclass
class History:
    """Per-epoch training loss and validation accuracy, and the epoch kept."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def best_val_accuracy(self) -> float:
        return self.val_accuracy[self.best_epoch] if self.val_accuracy else float("nan")


def train(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None = None,
    *,
    epochs: int = 10,
    lr: float = TRAIN_LR,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    after_step: Iterable[Callable[[], None]] = (),
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` in place with SGD and a per-epoch cosine schedule.

    ``after_step``: callables run after every optimizer step (a pruner re-applying its
    masks). ``extra_loss``: a penalty added to the cross-entropy (network slimming's
    L1 on BatchNorm scales). With a ``val_loader``, the weights of the epoch with the
    best validation accuracy are restored at the end.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    seed_everything(seed)
    callbacks = list(after_step)
    device = next(model.parameters()).device
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    criterion = nn.CrossEntropyLoss()
    history, best_state = History(), None
    for epoch in tqdm(range(epochs), desc="train", unit="epoch", disable=not progress,
                      leave=False):
        model.train()
        total_loss, batches = 0.0, 0
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs.to(device)), labels.to(device))
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            optimizer.step()
            for callback in callbacks:
                callback()
            total_loss, batches = total_loss + loss.item(), batches + 1
        scheduler.step()
        history.train_loss.append(total_loss / batches)
        if val_loader is not None:
            history.val_accuracy.append(evaluate(model, val_loader))
            if history.best_epoch < 0 or history.val_accuracy[-1] > history.best_val_accuracy:
                history.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def finetune(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None = None,
    *,
    epochs: int = 3,
    lr: float = FINETUNE_LR,
    **kwargs,
) -> History:
    """Finetune a pruned model: :func:`train` with a 10x smaller default learning rate."""
    return train(model, train_loader, val_loader, epochs=epochs, lr=lr, **kwargs)
