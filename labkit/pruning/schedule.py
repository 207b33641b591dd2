"""Finetuning after pruning: one-shot, iterative, gradual (AGP) and lottery tickets.

Pruning a trained model drops its accuracy; training the pruned model again with its
masks kept (:class:`~labkit.pruning.masking.Pruner`) recovers most of it. The learning
rate of this *finetuning* is 1/10 to 1/100 of training's (the lecture; Han et al. 2015):
the weights are already good, only the damage is to be repaired. Every function here
finetunes with :data:`labkit.training.FINETUNE_LR` (1/10) unless told otherwise.

* **one-shot**: prune to the target at once, then finetune (or not);
* **iterative**: prune a little, finetune, prune more, ... along a list of increasing
  sparsities such as 20, 40, 60, 70, 90% (Han et al. 2015);
* **AGP**, automated gradual pruning: raise the sparsity every few optimizer steps
  along a cubic schedule, within one training run (Zhu and Gupta 2017);
* **lottery ticket**: prune a trained model, rewind the surviving weights to their
  values at initialisation and train that sparse network from there; compare with a
  random re-initialisation of the same mask (Frankle and Carbin 2019).

Masks are magnitude masks of one granularity
(:func:`labkit.pruning.granularity.granularity_mask`). ``sparsity`` always means the
sparsity of the whole model, over the weights of all prunable layers
(:func:`labkit.measure.model_sparsity`); the layers named in ``dense_layers`` are left
unpruned and the others share the sparsity uniformly (:func:`layer_sparsities`). Each
function returns a **new** model; its input is never modified (``prune_and_finetune``,
``magnitude_pruner`` and :class:`AGPPruner` act in place and say so). Choices use the
validation split; the test split is only evaluated on the final model, when a
``test_loader`` is given. The data and the settings every schedule shares (loaders,
learning rate, granularity, dense layers, seed) travel together as one :class:`Recipe`.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from labkit.measure import prunable_layers
from labkit.pruning.masking import Pruner, apply_masks
from labkit.training import FINETUNE_LR, TRAIN_LR, evaluate, finetune, train
from labkit.validation import (
    check_count,
    check_loader,
    check_module,
    check_names,
    check_real,
    check_seed,
    check_sparsities,
    check_sparsity,
)

if TYPE_CHECKING:
    import pandas as pd

LECTURE_SPARSITIES = (0.2, 0.4, 0.6, 0.7, 0.9)
"""The lecture's iterative schedule: 20 -> 40 -> 60 -> 70 -> 90% sparsity."""


@dataclass(frozen=True)
class Step:
    """One pruning step: the sparsity it reached and the validation accuracy (%) of the
    model just after pruning and after finetuning at that sparsity."""

    sparsity: float
    pruned_val_accuracy: float
    val_accuracy: float


@dataclass
class PruningResult:
    """A pruned, finetuned model and the record of how it got there.

    ``test_accuracy`` is the final model's only (``None`` without a ``test_loader``).
    """

    model: nn.Module
    steps: list[Step]
    test_accuracy: float | None = None

    @property
    def sparsity(self) -> float:
        return self.steps[-1].sparsity

    @property
    def val_accuracy(self) -> float:
        return self.steps[-1].val_accuracy


@dataclass(frozen=True)
class Recipe:
    """What the schedules share: the data they finetune on and choose with, and how.

    ``train_loader`` finetunes; ``val_loader`` measures each step; ``test_loader``, when
    given, only the final model. ``lr`` is the learning rate (``None``: finetuning's
    :data:`~labkit.training.FINETUNE_LR`, or training's :data:`~labkit.training.TRAIN_LR`
    for a lottery ticket, trained from its initial weights); ``granularity`` that of the
    magnitude masks; ``dense_layers`` are left unpruned (:func:`layer_sparsities`);
    ``seed`` draws the shuffle order; ``progress`` shows bars.
    """

    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader | None = None
    lr: float | None = None
    granularity: str = "fine-grained"
    dense_layers: Sequence[str] = ()
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_loader(self.train_loader, "train_loader")
        check_loader(self.val_loader, "val_loader")
        if self.test_loader is not None:
            check_loader(self.test_loader, "test_loader")
        if self.lr is not None:
            check_real(self.lr, "lr", 0.0, low_open=True)
        check_seed(self.seed)

    def learning_rate(self, default: float) -> float:
        """``lr``, or ``default`` when it is ``None``."""
        return default if self.lr is None else self.lr


def _check_recipe(recipe: Recipe) -> None:
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a schedule.Recipe (loaders, lr, granularity, "
                        f"dense_layers, seed), got {type(recipe).__name__}")


def layer_sparsities(
    model: nn.Module, sparsity: float, dense_layers: Sequence[str] = ()
) -> dict[str, float]:
    """The sparsity of every pruned layer that gives the model an overall ``sparsity``.

    Layers in ``dense_layers`` keep all their weights; every other prunable layer gets
    the same sparsity :math:`s \\cdot N / N_p`, with :math:`N` the weights of all
    prunable layers and :math:`N_p` those of the pruned ones (so :math:`s` itself when
    nothing is left dense). A first conv of a few hundred weights, which sees the raw
    pixels, is often left dense this way.
    """
    check_sparsity(sparsity)
    layers = prunable_layers(model)
    dense_layers = check_names(dense_layers, "dense_layers")
    unknown = sorted(set(dense_layers) - set(layers))
    if unknown:
        raise ValueError(f"dense_layers names {unknown}, which are not prunable layers of "
                         f"the model; those are {sorted(layers)}")
    pruned = {name: layer for name, layer in layers.items() if name not in dense_layers}
    total = sum(layer.weight.numel() for layer in layers.values())
    prunable = sum(layer.weight.numel() for layer in pruned.values())
    per_layer = sparsity * total / prunable if prunable else 1.0
    if per_layer >= 1.0:
        raise ValueError(f"sparsity {sparsity!r} is out of reach with dense_layers "
                         f"{list(dense_layers)}: it must be below {prunable / total:.4f}")
    return dict.fromkeys(pruned, per_layer)


def layer_sparsity_table(model: nn.Module, sparsity: float,
                         dense_layers: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`layer_sparsities` as a table, a row per prunable layer (index ``layer``):
    its ``weights``, their ``share`` of all prunable weights and its sparsity for the
    overall ``sparsity`` (0 for a layer left dense)."""
    import pandas as pd

    layers = prunable_layers(model)
    per_layer = layer_sparsities(model, sparsity, dense_layers)
    total = sum(layer.weight.numel() for layer in layers.values())
    return pd.DataFrame.from_dict(
        {name: {"weights": layer.weight.numel(), "share": layer.weight.numel() / total,
                f"sparsity for {sparsity:.0%} overall": per_layer.get(name, 0.0)}
         for name, layer in layers.items()}, orient="index").rename_axis("layer")


def magnitude_pruner(
    model: nn.Module,
    sparsity: float,
    granularity: str = "fine-grained",
    dense_layers: Sequence[str] = (),
) -> Pruner:
    """A :class:`Pruner` of ``model`` with magnitude masks that give it an overall
    ``sparsity`` (:func:`layer_sparsities`); it acts on ``model`` in place."""
    return Pruner.from_sparsity(model, layer_sparsities(model, sparsity, dense_layers),
                                granularity)


def _test_accuracy(model: nn.Module, test_loader: DataLoader | None) -> float | None:
    return None if test_loader is None else evaluate(model, test_loader)


def prune_and_finetune(model: nn.Module, sparsity: float, recipe: Recipe, *,
                       epochs: int) -> Step:
    """One turn of the loop, **in place**: new magnitude masks at ``sparsity``, then
    ``epochs`` of finetuning with the masks kept (none when ``epochs`` is 0), as
    ``recipe`` says (its test loader and progress are not used)."""
    _check_recipe(recipe)
    check_count(epochs, "epochs", 0)
    pruner = magnitude_pruner(model, sparsity, recipe.granularity, recipe.dense_layers)
    pruner.apply()
    pruned_accuracy = evaluate(model, recipe.val_loader)
    if epochs == 0:
        return Step(sparsity, pruned_accuracy, pruned_accuracy)
    finetune(model, recipe.train_loader, recipe.val_loader, epochs=epochs,
             lr=recipe.learning_rate(FINETUNE_LR), after_step=[pruner], seed=recipe.seed,
             progress=False)
    return Step(sparsity, pruned_accuracy, evaluate(model, recipe.val_loader))


def one_shot(model: nn.Module, sparsity: float, recipe: Recipe, *,
             finetune_epochs: int = 0) -> PruningResult:
    """Prune a copy of ``model`` to ``sparsity`` at once, then finetune it
    ``finetune_epochs`` epochs (0: no finetuning, the train loader unused)."""
    check_count(finetune_epochs, "finetune_epochs", 0)
    pruned = copy.deepcopy(model)
    step = prune_and_finetune(pruned, sparsity, recipe, epochs=finetune_epochs)
    return PruningResult(pruned, [step], _test_accuracy(pruned, recipe.test_loader))


def iterative(model: nn.Module, sparsities: Sequence[float], recipe: Recipe, *,
              finetune_epochs_per_step: int = 2) -> PruningResult:
    """Iterative pruning (Han et al. 2015): for each sparsity of the strictly increasing
    list ``sparsities`` (e.g. :data:`LECTURE_SPARSITIES`), new magnitude masks on the
    current weights, then ``finetune_epochs_per_step`` epochs of finetuning (step ``i``
    shuffles with ``recipe.seed + i``).

    Each step sees the weights the previous finetuning adjusted to the previous pruning,
    so it removes only the *next* smallest weights of a network that has already
    adapted. Pruned weights are exactly zero, hence the smallest, so masks nest.
    """
    _check_recipe(recipe)
    check_sparsities(sparsities, increasing=True)
    check_count(finetune_epochs_per_step, "finetune_epochs_per_step", 1)
    check_seed(recipe.seed + len(sparsities) - 1, "seed + len(sparsities) - 1")
    pruned = copy.deepcopy(model)
    steps = [
        prune_and_finetune(pruned, sparsity, replace(recipe, seed=recipe.seed + index),
                           epochs=finetune_epochs_per_step)
        for index, sparsity in enumerate(tqdm(sparsities, desc="iterative", unit="step",
                                              disable=not recipe.progress, leave=False))
    ]
    return PruningResult(pruned, steps, _test_accuracy(pruned, recipe.test_loader))


def steps_frame(steps: Sequence[Step]) -> pd.DataFrame:
    """Pruning steps of one run as a table, a row per step (index ``sparsity``): the
    share of the surviving weights each step removes, ``(s_t - s_{t-1}) / (1 - s_{t-1})``
    with ``s_0 = 0`` (what a step costs grows with it; Zhu and Gupta 2017), and the
    validation accuracy (%) just ``after pruning`` and ``after finetuning``."""
    import pandas as pd

    if not steps or not all(isinstance(step, Step) for step in steps):
        raise ValueError(f"steps must be a non-empty list of schedule.Step, got {steps!r}")
    check_sparsities([step.sparsity for step in steps], "steps' sparsities", increasing=True)
    before = [0.0, *(step.sparsity for step in steps)]
    return pd.DataFrame.from_dict(
        {step.sparsity: {"removes of the survivors": (step.sparsity - last) / (1 - last),
                         "after pruning (%)": step.pruned_val_accuracy,
                         "after finetuning (%)": step.val_accuracy}
         for step, last in zip(steps, before, strict=False)},
        orient="index").rename_axis("sparsity")


def agp_sparsity(t: int, n: int, s_initial: float, s_final: float) -> float:
    """The sparsity of automated gradual pruning (Zhu and Gupta 2017) at pruning step ``t``:

    .. math:: s_t = s_f + (s_i - s_f) \\left(1 - \\frac{t}{n}\\right)^3, \\quad 0 \\le t \\le n.

    It starts at ``s_initial`` (``t = 0``), ends at ``s_final`` (``t = n``) and rises
    fast at first, when many redundant weights remain, then ever more slowly.
    """
    check_count(n, "n", 1)
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"t must be a number, got {type(t).__name__}")
    if not 0 <= t <= n:
        raise ValueError(f"t must be in [0, n] = [0, {n}], got {t!r}")
    check_sparsity(s_initial, "s_initial")
    check_sparsity(s_final, "s_final")
    if s_initial > s_final:
        raise ValueError(f"s_initial must not exceed s_final, got s_initial={s_initial!r} > "
                         f"s_final={s_final!r}")
    return s_final + (s_initial - s_final) * (1.0 - t / n) ** 3


class AGPPruner:
    """An ``after_step`` callback that prunes along the AGP schedule, **in place**.

    At creation it prunes to ``s_initial``; after every ``step_every`` optimizer steps it
    computes new magnitude masks at the next sparsity :func:`agp_sparsity` ``(t, n, ...)``
    until ``t = n``; after every other step it re-applies the current masks. With a
    ``val_loader`` it records a :class:`Step` per sparsity: the validation accuracy just
    after raising it and just before the next raise (or now, for the last).
    """

    def __init__(
        self,
        model: nn.Module,
        s_final: float,
        n: int,
        step_every: int,
        *,
        s_initial: float = 0.0,
        granularity: str = "fine-grained",
        dense_layers: Sequence[str] = (),
        val_loader: DataLoader | None = None,
    ) -> None:
        agp_sparsity(0, n, s_initial, s_final)
        layer_sparsities(model, s_final, dense_layers)
        check_count(step_every, "step_every", 1)
        self.model, self.n, self.step_every = model, n, step_every
        self.s_initial, self.s_final = s_initial, s_final
        self.granularity, self.dense_layers = granularity, tuple(dense_layers)
        self.val_loader = val_loader
        self.t, self.optimizer_steps = 0, 0
        self._pruned_accuracies: list[float] = []
        self._finetuned_accuracies: list[float] = []
        self._prune()

    @property
    def sparsity(self) -> float:
        """The current target sparsity :math:`s_t`."""
        return agp_sparsity(self.t, self.n, self.s_initial, self.s_final)

    def _accuracy(self) -> float:
        return float("nan") if self.val_loader is None else evaluate(self.model, self.val_loader)

    def _prune(self) -> None:
        self.pruner = magnitude_pruner(self.model, self.sparsity, self.granularity,
                                       self.dense_layers)
        self.pruner.apply()
        self._pruned_accuracies.append(self._accuracy())

    def __call__(self) -> None:
        self.optimizer_steps += 1
        if self.t < self.n and self.optimizer_steps % self.step_every == 0:
            self._finetuned_accuracies.append(self._accuracy())
            self.t += 1
            self._prune()
        else:
            self.pruner.apply()

    def steps(self) -> list[Step]:
        """One :class:`Step` per sparsity reached so far (the last one measured now)."""
        finetuned = [*self._finetuned_accuracies, self._accuracy()]
        return [Step(agp_sparsity(t, self.n, self.s_initial, self.s_final), pruned, tuned)
                for t, (pruned, tuned) in enumerate(zip(self._pruned_accuracies, finetuned,
                                                            strict=True))]


def agp(model: nn.Module, s_final: float, recipe: Recipe, *, n: int = 10,
        step_every: int | None = None, epochs: int = 12,
        s_initial: float = 0.0) -> PruningResult:
    """Automated gradual pruning (Zhu and Gupta 2017) of a copy of ``model``.

    One finetuning run of ``epochs`` epochs; the sparsity rises from ``s_initial`` to
    ``s_final`` in ``n`` steps of :func:`agp_sparsity`, one every ``step_every``
    optimizer steps (default: one epoch, ``len(recipe.train_loader)``); the remaining
    epochs finetune at ``s_final``. The schedule must end before the run does, so that
    some training happens at ``s_final``. The model is the one at the end (no best-epoch
    choice: an earlier epoch is a denser model).
    """
    _check_recipe(recipe)
    train_loader = recipe.train_loader
    step_every = len(train_loader) if step_every is None else step_every
    check_count(n, "n", 1)
    check_count(step_every, "step_every", 1)
    check_count(epochs, "epochs", 1)
    if n * step_every >= epochs * len(train_loader):
        raise ValueError(f"the schedule needs n * step_every = {n * step_every} optimizer "
                         f"steps, the run has only epochs * len(train_loader) = "
                         f"{epochs * len(train_loader)}: raise epochs or lower n or step_every")
    pruned = copy.deepcopy(model)
    pruner = AGPPruner(pruned, s_final, n, step_every, s_initial=s_initial,
                       granularity=recipe.granularity, dense_layers=recipe.dense_layers,
                       val_loader=recipe.val_loader)
    finetune(pruned, train_loader, epochs=epochs, lr=recipe.learning_rate(FINETUNE_LR),
             after_step=[pruner], seed=recipe.seed, progress=recipe.progress)
    return PruningResult(pruned, pruner.steps(), _test_accuracy(pruned, recipe.test_loader))


def rewind(initial: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """The lottery ticket: a copy of the model at initialisation, ``initial``, with
    ``masks`` applied. Surviving weights get back exactly their initial values
    (Frankle and Carbin 2019: :math:`f(x; m \\odot \\theta_0)`)."""
    return apply_masks(initial, masks)


def random_reinit(initial: nn.Module, masks: Mapping[str, torch.Tensor], seed: int) -> nn.Module:
    """The control for a lottery ticket: the same architecture and ``masks``, new
    random initial weights (each module's ``reset_parameters``, seeded by ``seed``;
    the global random state is left as it was)."""
    check_module(initial, "initial")
    seed = check_seed(seed)
    reinitialised = copy.deepcopy(initial)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in reinitialised.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return apply_masks(reinitialised, masks)


@dataclass
class LotteryResult:
    """Winning ticket vs random re-initialisation of the same mask, both retrained.

    Accuracies in %; ``*_history`` holds the validation accuracy after every epoch of
    retraining (how fast each network learns); test accuracies are ``None`` without a
    ``test_loader``.
    """

    sparsity: float
    ticket: nn.Module
    reinit: nn.Module
    ticket_history: list[float]
    reinit_history: list[float]
    ticket_test_accuracy: float | None = None
    reinit_test_accuracy: float | None = None

    @property
    def ticket_val_accuracy(self) -> float:
        return max(self.ticket_history)

    @property
    def reinit_val_accuracy(self) -> float:
        return max(self.reinit_history)


def lottery_ticket(initial: nn.Module, trained: nn.Module, sparsity: float, recipe: Recipe,
                   *, epochs: int = 15) -> LotteryResult:
    """The lottery-ticket experiment (Frankle and Carbin 2019), one-shot.

    ``trained`` is ``initial`` after training. Its magnitude masks at ``sparsity`` are
    applied to (1) the initial weights, rewound (:func:`rewind`), and (2) a random
    re-initialisation (:func:`random_reinit` with ``recipe.seed + 1``). Both sparse
    networks are trained from scratch with the masks kept, with the same recipe
    (``epochs``, the learning rate, by default training's, and the seed). A winning
    ticket trains as well as the dense network; the random re-initialisation of the same
    mask does not.
    """
    _check_recipe(recipe)
    masks = magnitude_pruner(trained, sparsity, recipe.granularity, recipe.dense_layers).masks
    candidates = {"ticket": rewind(initial, masks),
                  "reinit": random_reinit(initial, masks, recipe.seed + 1)}
    histories = {}
    for name, network in tqdm(candidates.items(), desc="lottery", unit="network",
                              disable=not recipe.progress, leave=False):
        histories[name] = train(network, recipe.train_loader, recipe.val_loader,
                                epochs=epochs, lr=recipe.learning_rate(TRAIN_LR),
                                seed=recipe.seed, after_step=[Pruner(network, masks)],
                                progress=False).val_accuracy
    test_loader = recipe.test_loader
    return LotteryResult(sparsity, candidates["ticket"], candidates["reinit"],
                         histories["ticket"], histories["reinit"],
                         _test_accuracy(candidates["ticket"], test_loader),
                         _test_accuracy(candidates["reinit"], test_loader))
