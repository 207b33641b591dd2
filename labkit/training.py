"""Training, evaluation and finetuning.

Plain SGD with momentum and weight decay and a cosine learning-rate schedule stepped
once per *epoch* (the original lab stepped it per batch with ``T_max = epochs``,
so its learning rate oscillated). The model kept at the end is the one with the best
*validation* accuracy; the test split is only ever reported.

Finetuning after pruning uses a learning rate 1/10 of training's by default (the
lecture: 1/10 to 1/100 of the original), and accepts ``after_step`` callbacks, which
is how :class:`labkit.pruning.masking.Pruner` keeps pruned weights at zero.

Training runs on a fixed number of torch threads (:data:`TRAIN_THREADS`, one by default):
how a reduction is split over threads changes the rounding of its sum, so the same seed
gives other weights under another thread count. With the count fixed, a model is the
same bit for bit whatever ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` said before
(one thread is also the fastest for these small models).

The shuffle order is drawn from ``seed`` as well. A loader built with its own generator
(:meth:`labkit.data.Splits.loaders`) advances that generator every epoch, so two runs
with the same seed on the same loader would otherwise see other batches: the second
finetune of a lab gave another accuracy than the first. :func:`train` seeds the loader's
generator with ``seed`` for the run and puts its state back afterwards
(:func:`shuffle_seeded`), so a run depends on its arguments only, and the loader is left
as it was.

Language models train the same way on their own loss: :func:`train_language_model` fits a
next-token model to a :class:`~labkit.data.Corpus` (AdamW, as nanoGPT), and
:func:`perplexity` is the exponent of its mean next-token cross-entropy.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from labkit.data import Corpus
from labkit.validation import (
    batches,
    check_count,
    check_loader,
    check_real,
    check_seed,
    parameter_device,
)


class ProgressBar(tqdm):
    """``tqdm.auto``'s bar. In a notebook it is shown through a display handle and, when
    it closes without ``leave``, replaced by empty text: a closed widget leaves no view
    behind, which a saved notebook would show as "Error displaying widget: model not
    found"."""

    def __init__(self, *args, **kwargs):
        live = (any(base.__module__ == "tqdm.notebook" for base in tqdm.__mro__)
                and not kwargs.get("disable", False))
        super().__init__(*args, **kwargs, **({"display": False} if live else {}))
        self.handle = None
        if live:
            from IPython.display import display

            self.handle = display(self.container, display_id=True)

    def close(self):
        super().close()
        if self.handle is not None and not self.leave:
            self.handle.update({"text/plain": ""}, raw=True)

TRAIN_LR = 0.05
FINETUNE_LR = TRAIN_LR / 10
TRAIN_THREADS = 1
"""The torch thread count every training and finetuning run uses unless told otherwise."""


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads and restore the count after.

    Tiny networks run thousands of forward and backward passes, for which a thread
    pool's synchronisation costs more than it saves: on a 2-core machine shared with
    other work, one thread runs them several times faster than two. ``None`` leaves the
    count to torch.
    """
    if threads is not None:
        check_count(threads, "threads")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats exactly on the same machine."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _shuffle_generators(loader: DataLoader) -> list[torch.Generator]:
    """The generators that draw ``loader``'s shuffle order: its own and its sampler's
    (one object when the loader handed its generator to the sampler)."""
    found: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


@contextmanager
def shuffle_seeded(loader: DataLoader, seed: int) -> Iterator[None]:
    """In the block, ``loader`` shuffles as a fresh generator seeded with ``seed`` would;
    afterwards its generators are back in the state they had. A loader without a
    generator draws its order from torch's global generator, which :func:`train` seeds."""
    generators = _shuffle_generators(loader)
    states = [generator.get_state() for generator in generators]
    for generator in generators:
        generator.manual_seed(seed)
    try:
        yield
    finally:
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in percent."""
    device = parameter_device(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    for inputs, labels in batches(loader, "loader"):
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
    threads: int | None = TRAIN_THREADS,
    progress: bool = True,
) -> History:
    """Train ``model`` in place with SGD and a per-epoch cosine schedule.

    ``after_step``: callables run after every optimizer step (a pruner re-applying its
    masks). ``extra_loss``: a penalty added to the cross-entropy (network slimming's
    L1 on BatchNorm scales). With a ``val_loader``, the weights of the epoch with the
    best validation accuracy are restored at the end. ``seed`` seeds Python, NumPy, torch
    and the shuffle order of ``train_loader`` (:func:`shuffle_seeded`): the same call gives
    the same model every time, whatever ran before it. The run uses ``threads`` torch
    threads (:data:`TRAIN_THREADS`; ``None`` leaves the count as it is) and restores the
    count afterwards. A loss that becomes NaN or infinite stops the run with a
    ``FloatingPointError`` (lower ``lr``).
    """
    parameter_device(model)
    check_count(epochs, "epochs")
    check_real(lr, "lr", 0.0, low_open=True)
    check_real(momentum, "momentum", 0.0, 1.0, high_open=True)
    check_real(weight_decay, "weight_decay", 0.0)
    check_loader(train_loader, "train_loader")
    seed = check_seed(seed)
    if val_loader is not None:
        check_loader(val_loader, "val_loader")
    callbacks = list(after_step)
    with torch_threads(threads), shuffle_seeded(train_loader, seed):
        seed_everything(seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                    weight_decay=weight_decay)
        return _epochs(model, optimizer, train_loader, val_loader, epochs, callbacks,
                       extra_loss, progress)


def _epochs(model, optimizer, train_loader, val_loader, epochs, callbacks, extra_loss,
            progress) -> History:
    """The loop of :func:`train`: ``epochs`` epochs, the best validation epoch kept."""
    device = parameter_device(model)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    criterion = nn.CrossEntropyLoss()
    history, best_state = History(), None
    for epoch in ProgressBar(range(epochs), desc="train", unit="epoch",
                             disable=not progress, leave=False):
        model.train()
        total_loss, steps = 0.0, 0
        for inputs, labels in batches(train_loader, "train_loader"):
            optimizer.zero_grad()
            loss = criterion(model(inputs.to(device)), labels.to(device))
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the training loss became {value} in epoch {epoch}, step {steps}: "
                    f"lr={optimizer.defaults['lr']!r} is probably too large")
            loss.backward()
            optimizer.step()
            for callback in callbacks:
                callback()
            total_loss, steps = total_loss + value, steps + 1
        scheduler.step()
        history.train_loss.append(total_loss / steps)
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


# --- language models: next-token loss, perplexity, training ---------------------------

def language_model_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ``windows[:, 1:]`` from ``windows[:, :-1]``."""
    logits = model(windows[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       windows[:, 1:].reshape(-1))


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 64) -> float:
    """``exp`` of the mean next-token cross-entropy over every token of ``windows``.

    ``windows``: ``(count, length + 1)`` token ids, e.g. ``corpus.windows("val", context)``.
    A model that guesses uniformly among ``V`` tokens scores ``V``; lower is better.
    """
    check_count(batch_size, "batch_size")
    if windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError("windows must hold at least one window of two or more tokens, got "
                         f"shape {tuple(windows.shape)}")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        tokens = batch[:, 1:].numel()
        total += language_model_loss(model, batch).item() * tokens
        count += tokens
    model.train(was_training)
    return math.exp(total / count)


def train_language_model(
    model: nn.Module,
    corpus: Corpus,
    *,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 5e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    threads: int | None = TRAIN_THREADS,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place on random training windows of ``corpus``; returns the
    loss of every step.

    An epoch is as many steps of ``batch_size`` windows of ``model.context + 1`` tokens as
    the training split has tokens to fill; batch ``s`` is drawn with seed ``seed + s``.
    AdamW (Loshchilov and Hutter 2019) with a linear warm-up over the first 5% of the
    steps and a cosine decay to zero, as nanoGPT trains, on ``threads`` torch threads.
    """
    check_count(epochs, "epochs")
    check_count(batch_size, "batch_size")
    check_real(lr, "lr", 0.0, low_open=True)
    steps = max(1, epochs * corpus.train.numel() // (batch_size * model.context))
    with torch_threads(threads):
        seed_everything(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99),
                                      weight_decay=weight_decay)
        warmup = max(1, steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
            (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps))))
        model.train()
        losses = []
        for step in tqdm(range(steps), desc="train", unit="step", disable=not progress,
                         leave=False):
            windows = corpus.windows("train", model.context, count=batch_size, seed=seed + step)
            loss = language_model_loss(model, windows)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    model.eval()
    return losses
