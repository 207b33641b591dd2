"""Checks of lab 04: a one-layer sensitivity scan, and a per-layer sparsity choice within
a size budget (index counted) that must still reach an accuracy bar after a fixed
finetune."""

from __future__ import annotations

import copy
import numbers

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from labkit import data, measure, zoo
from labkit.grading.checks.core import Case, Check, close, describe_outcome, outcome_kind
from labkit.models import MLP
from labkit.pruning import sensitivity
from labkit.search import torch_threads
from labkit.training import TRAIN_THREADS, evaluate

SIZE_BUDGET = 0.25
"""The graded size: a quarter of the dense model's bits."""
INDEX = "bitmask"
"""The sparse format the budget counts: one mask bit per weight plus the non-zeros."""
FINETUNE_EPOCHS = 2
"""The fixed finetune the check runs on the student's choice (seed 0, masks kept)."""
ACCURACY_BAR = 98.5
"""Validation accuracy (%) the finetuned choice must reach."""
ACCURACY_TOLERANCE = 1e-5
"""Accuracies (%) agree within this (relative and absolute): one image of the scan's 135
is 0.74 points, and an accuracy computed in float32 is off by less than 1e-5."""


# --- scan_layer: one row of the sensitivity scan ---------------------------------------


def _scan_inputs() -> tuple[nn.Module, nn.Module, DataLoader]:
    """Fresh for every run: the lab's dense VGG, a seeded MLP and 135 validation digits
    (half the split)."""
    splits = data.load("digits")
    vgg = zoo.pretrained("vgg-digits", progress=False)
    torch.manual_seed(0)
    mlp = MLP(64, (32,), 10)
    loader = DataLoader(Subset(splits.val, range(135)), batch_size=135)
    return vgg, mlp, loader


def reference_scan_layer(model: nn.Module, name: str, sparsities: list[float],
                         val_loader: DataLoader) -> list[float]:
    """labkit's scan of the one layer ``name``: a list of accuracies (%), one per sparsity
    in the order given, each from the layer's original weights (the scan itself takes
    its grid in increasing order)."""
    grid = sorted(set(sparsities))
    scan = sensitivity.sensitivity_scan(model, val_loader, sparsities=grid, layers=[name],
                                        progress=False)
    by_sparsity = dict(zip(grid, scan.accuracies[name], strict=True))
    return [by_sparsity[sparsity] for sparsity in sparsities]


def observe_scan_layer(scan_layer, case: Case) -> dict:
    """The accuracies the function returns, and whether it left the model unchanged."""
    model = case.args[0]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    accuracies = scan_layer(*case.args)
    unchanged = all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    return {"accuracies": accuracies, "model unchanged": unchanged}


def _scan_case(inputs: tuple, label: str, model_index: int, name: str,
               sparsities: list[float]) -> Case:
    """A case with its own copy of the model, so a function that changes the model it is
    given spoils no other case (the reference works on a copy and runs first)."""
    return Case(label, (copy.deepcopy(inputs[model_index]), name, sparsities, inputs[2]))


ORDER = "each from the original weights, whatever the order"
"""What a case with a decreasing grid says: a scan that prunes one copy again and again
(masks piling up from one sparsity to the next) fails it, and its name says why."""


def _scan_cases() -> list[Case]:
    inputs = _scan_inputs()
    return [
        _scan_case(inputs, "the first conv at one sparsity", 0, "backbone.conv0", [0.5]),
        _scan_case(inputs, "the last conv at three sparsities", 0, "backbone.conv3",
                   [0.3, 0.6, 0.9]),
        _scan_case(inputs, "the classifier, nearly all pruned", 0, "classifier", [0.1, 0.95]),
        _scan_case(inputs, "an MLP's first layer: round(numel * sparsity) weights pruned", 1,
                   "layers.1", [0.33, 0.77]),
        _scan_case(inputs, f"the second conv at 0.9, then 0.2 and 0.6: {ORDER}", 0,
                   "backbone.conv1", [0.9, 0.2, 0.6]),
    ]


def _hidden_scan(seed: int) -> list[Case]:
    """One layer at a high sparsity (0.86 to 0.95, where every hidden layer has lost
    accuracy) followed by two lower ones in random order: a scan whose masks pile up
    scores the high sparsity's accuracy again and fails."""
    generator = torch.Generator().manual_seed(seed)
    names = ["backbone.conv1", "backbone.conv2", "backbone.conv3"]
    name = names[int(torch.randint(len(names), (1,), generator=generator))]
    high = round(0.86 + 0.09 * float(torch.rand(1, generator=generator)), 2)
    lower = [round(0.05 + 0.6 * float(x), 2) for x in torch.rand(2, generator=generator)]
    sparsities = [high, *dict.fromkeys(lower)]
    return [_scan_case(_scan_inputs(), f"{name} at {sparsities}: {ORDER}", 0, name,
                       sparsities)]


SCAN_LAYER = Check(
    name="scan_layer",
    reference=reference_scan_layer,
    cases=_scan_cases,
    hidden=_hidden_scan,
    observe=observe_scan_layer,
    compare=close(ACCURACY_TOLERANCE),
    pure=False,
    replaces=("labkit.pruning.sensitivity.sensitivity_scan",
              "labkit.pruning.sensitivity.pruned_model"),
    conventions=("a list of floats", "round(numel * sparsity)", "leave `model` unchanged",
                 "original weights", "in the order given"),
)


# --- the design challenge: sparsities within the budget, above the bar -----------------


def _answer(function, case: Case):
    return function()


def finetuned_accuracy(model: nn.Module, sparsities: dict[str, float]) -> float:
    """Validation accuracy (%) of ``model`` pruned to ``sparsities`` (fine-grained
    magnitude masks) after the check's fixed finetune
    (:func:`labkit.pruning.sensitivity.finetuned_pruned_model`, as in the lab's table):
    :data:`FINETUNE_EPOCHS` epochs at the finetuning learning rate, seed 0, batches of 64,
    the masks re-applied after every step; evaluated on one thread like the training, so
    the number is the same in every process."""
    train_loader, val_loader, _ = data.load("digits").loaders(batch_size=64)
    with torch_threads(TRAIN_THREADS):
        tuned = sensitivity.finetuned_pruned_model(model, sparsities, train_loader, val_loader,
                                                   epochs=FINETUNE_EPOCHS, seed=0)
        return evaluate(tuned, val_loader)


def judge_sparsity_budget(_: object, sparsities: object) -> str | None:
    """``None`` when ``sparsities`` names every prunable layer of the lab's model with a
    number in [0, 1), keeps its size with a bitmask index within :data:`SIZE_BUDGET` of
    dense, and reaches :data:`ACCURACY_BAR` after :func:`finetuned_accuracy`."""
    if outcome_kind(sparsities) != "value":
        return f"expected a dict of sparsities, got {describe_outcome(sparsities)}"
    model = zoo.pretrained("vgg-digits", progress=False)
    layers = sorted(measure.prunable_layers(model))
    if type(sparsities) is not dict or sorted(sparsities) != layers:
        return (f"expected a dict with one sparsity for every prunable layer, named as in "
                f"prunable_layers(model): {layers}; got {describe_outcome(sparsities)}")
    for name, value in sparsities.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            return f"the sparsity of {name} must be a number in [0, 1), got {value!r}"
    fraction = sensitivity.size_fraction(model, sparsities, index=INDEX)
    if fraction > SIZE_BUDGET:
        return (f"with its {INDEX} index the pruned model keeps {fraction:.4f} of the dense "
                f"size, {fraction - SIZE_BUDGET:.4f} above the budget of {SIZE_BUDGET}")
    accuracy = finetuned_accuracy(model, sparsities)
    if accuracy < ACCURACY_BAR:
        return (f"within the budget ({fraction:.4f} of the dense size), but after the fixed "
                f"{FINETUNE_EPOCHS}-epoch finetune the validation accuracy is {accuracy:.2f}%, "
                f"{ACCURACY_BAR - accuracy:.2f} points below the bar of {ACCURACY_BAR}%")
    return None


SPARSITY_BUDGET = Check(
    name="sparsity_budget",
    reference=lambda: None,
    cases=lambda: [Case("your sparsities", expected=None)],
    hidden=lambda seed: [],
    observe=_answer,
    compare=judge_sparsity_budget,
    pure=False,
    conventions=("bitmask", "2 epochs", f"{ACCURACY_BAR}%"),
)
