"""Every check of labs 04, 05 and 06 graded the referee's way (:func:`core.all_cases`,
:func:`core.expected_outcome`, :func:`core.outcome`, ``check.compare``) on correct
solutions written in other styles than labkit's reference (formula order, float32 or
float64 intermediates, loops or vectorised, torch's own pruning, NumPy scalars where
numbers are allowed), and on the mistakes students make, each of which must fail with a
message naming it.

Seeds: ``scan_layer``, ``limit_ratio``, ``agp_sparsity`` and ``iterative_prune`` run their
public cases and the hidden cases of 50 seeds. The design challenges (``sparsity_budget``,
lab 04, which finetunes for 2 epochs per answer, and ``policy_budget``, lab 05) have no
hidden cases at all (asserted for the 50 seeds), so one run of their public case grades
an answer for every seed.
"""

import copy

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from labkit.grading.checks import core
from labkit.grading.checks.amc import LIMIT_RATIO, POLICY_BUDGET
from labkit.grading.checks.schedule import AGP_SPARSITY, ITERATIVE_PRUNE, SIZES
from labkit.grading.checks.sensitivity import SCAN_LAYER, SPARSITY_BUDGET
from labkit.pruning.granularity import fine_grained_mask
from labkit.pruning.masking import Pruner
from labkit.training import evaluate, finetune
from tests.support.lab_submissions import lab_solutions

SEEDS = range(50)
LAYERS = ("backbone.conv0", "backbone.conv1", "backbone.conv2", "backbone.conv3", "classifier")


def first_failure(check, solution, seeds=SEEDS):
    """``"<case>: <what differs>"`` for the first case ``solution`` fails, or None. The
    public cases run once (they are the same for every seed), the hidden ones per seed,
    each on fresh inputs with the reference's outcome taken first."""
    public = len(check.cases())
    for number, seed in enumerate(seeds):
        cases = core.all_cases(check, seed)
        for case in cases[0 if number == 0 else public:]:
            expected = core.expected_outcome(check, case)
            problem = check.compare(expected, core.outcome(check, solution, case))
            if problem:
                return f"seed {seed}, {case.name}: {problem}"
    return None


def assert_fails(check, mistake, *phrases, seeds=SEEDS):
    problem = first_failure(check, mistake, seeds)
    assert problem is not None, f"{mistake.__name__} passed {check.name}"
    for phrase in phrases:
        assert phrase in problem, (phrase, problem)


# --- lab 04: scan_layer ---------------------------------------------------------------


def accuracy_float32(model, loader):
    """Top-1 accuracy (%) counted in float32 tensors."""
    model.eval()
    with torch.no_grad():
        hits = torch.cat([(model(x).argmax(1) == y).float() for x, y in loader])
    return hits.mean() * 100


def scan_fresh_copies(model, name, sparsities, val_loader):
    """A copy per sparsity, the smallest weights zeroed through a stable argsort, the
    accuracy counted in float32 and returned as NumPy scalars."""
    accuracies = []
    for sparsity in sparsities:
        pruned = copy.deepcopy(model)
        weight = dict(pruned.named_modules())[name].weight
        order = weight.detach().abs().flatten().argsort(stable=True)
        with torch.no_grad():
            weight.view(-1)[order[:round(weight.numel() * sparsity)]] = 0.0
        accuracies.append(np.float64(accuracy_float32(pruned, val_loader).item()))
    return accuracies


def scan_torch_prune(model, name, sparsities, val_loader):
    """torch.nn.utils.prune's L1 criterion on a copy per sparsity (it prunes
    ``round(amount * numel)`` weights too)."""
    accuracies = []
    for sparsity in sparsities:
        pruned = copy.deepcopy(model)
        prune.l1_unstructured(dict(pruned.named_modules())[name], "weight", amount=sparsity)
        accuracies.append(evaluate(pruned, val_loader))
    return accuracies


def scan_float64_threshold(model, name, sparsities, val_loader):
    """One copy, the original weights restored before each sparsity; the mask is a float64
    threshold at the k-th smallest magnitude."""
    pruned = copy.deepcopy(model)
    layer = dict(pruned.named_modules())[name]
    original = layer.weight.detach().clone()
    magnitude = original.double().abs().flatten()
    accuracies = []
    for sparsity in sparsities:
        count = round(original.numel() * sparsity)
        keep = torch.ones_like(magnitude, dtype=torch.bool) if count == 0 else \
            magnitude > magnitude.kthvalue(count).values
        with torch.no_grad():
            layer.weight.copy_(original * keep.reshape(original.shape))
        accuracies.append(float(evaluate(pruned, val_loader)))
    return accuracies


@pytest.mark.parametrize("solution", [scan_fresh_copies, scan_torch_prune,
                                      scan_float64_threshold])
def test_scan_layer_passes_other_styles(solution):
    assert first_failure(SCAN_LAYER, solution) is None


def scan_piling_masks(model, name, sparsities, val_loader):
    pruned = copy.deepcopy(model)
    layer = dict(pruned.named_modules())[name]
    accuracies = []
    for sparsity in sparsities:
        with torch.no_grad():
            layer.weight.mul_(fine_grained_mask(layer.weight, sparsity))
        accuracies.append(evaluate(pruned, val_loader))
    return accuracies


def test_scan_layer_names_masks_piling_up_on_the_public_and_every_hidden_case():
    assert_fails(SCAN_LAYER, scan_piling_masks, "each from the original weights",
                 "accuracies: item 1", seeds=[0])
    for seed in SEEDS:
        (hidden,) = core.all_cases(SCAN_LAYER, seed)[len(SCAN_LAYER.cases()):]
        problem = SCAN_LAYER.compare(core.expected_outcome(SCAN_LAYER, hidden),
                                     core.outcome(SCAN_LAYER, scan_piling_masks, hidden))
        assert problem and "accuracies: item 1" in problem, (seed, hidden.name)
        assert "each from the original weights" in hidden.name


def _scan_pruning(count):
    """A scan that prunes ``count(numel, sparsity)`` weights, else like the lab's."""
    def scan(model, name, sparsities, val_loader):
        accuracies = []
        for sparsity in sparsities:
            pruned = copy.deepcopy(model)
            weight = dict(pruned.named_modules())[name].weight
            order = weight.detach().abs().flatten().argsort()
            with torch.no_grad():
                weight.view(-1)[order[:count(weight.numel(), sparsity)]] = 0.0
            accuracies.append(evaluate(pruned, val_loader))
        return accuracies
    return scan


def scan_in_place(model, name, sparsities, val_loader):
    layer = dict(model.named_modules())[name]
    original = layer.weight.detach().clone()
    accuracies = []
    for sparsity in sparsities:
        with torch.no_grad():
            layer.weight.copy_(original * fine_grained_mask(original, sparsity))
        accuracies.append(evaluate(model, val_loader))
    return accuracies


@pytest.mark.parametrize("mistake, phrases", [
    (_scan_pruning(lambda n, s: round(n * s) + 1), ["accuracies: item"]),
    (_scan_pruning(lambda n, s: int(n * s)),
     ["round(numel * sparsity) weights pruned", "accuracies: item 1"]),
    (scan_in_place, ["model unchanged: expected True, got False"]),
    (lambda model, name, sparsities, loader: scan_float64_threshold(
        model, name, sorted(sparsities), loader), ["whatever the order", "accuracies: item"]),
    (lambda *args: torch.tensor(scan_torch_prune(*args)), ["expected a list, got"]),
    (lambda *args: tuple(scan_torch_prune(*args)), ["expected a list, got"]),
    (lambda *args: [a / 100 for a in scan_torch_prune(*args)],
     ["accuracies: item 0: expected 9", "got 0.9"]),
], ids=["one weight too many", "floor instead of round", "changes the model",
        "sorts the grid", "a tensor for a list", "a tuple for a list",
        "a fraction for a percentage"])
def test_scan_layer_names_typical_mistakes(mistake, phrases):
    assert_fails(SCAN_LAYER, mistake, *phrases, seeds=[0])


# --- lab 04: the design challenge ---------------------------------------------------

HAND = lab_solutions("04_sensitivity")["choose_sparsities"]()
"""The lab's hand-picked choice, from its exercise cell (its size and accuracy are in the
lab's stored outputs)."""


def test_the_design_challenges_have_no_hidden_cases():
    for seed in SEEDS:
        assert SPARSITY_BUDGET.hidden(seed) == [] and POLICY_BUDGET.hidden(seed) == []


@pytest.mark.parametrize("answer", [
    lambda: {name: np.float64(value) for name, value in HAND.items()},
    lambda: {name: (0 if value == 0 else np.float32(value))
             for name, value in reversed(HAND.items())},
], ids=["NumPy float64", "float32 and int, keys reversed"])
def test_sparsity_budget_passes_other_styles(answer):
    assert first_failure(SPARSITY_BUDGET, answer, seeds=[0]) is None


@pytest.mark.parametrize("answer, phrases", [
    ({**HAND, "backbone.conv3": 0.5}, ["bitmask index", "above the budget of 0.25"]),
    (dict.fromkeys(LAYERS, 0.8), ["2-epoch finetune", "points below the bar of 98.5%"]),
    ({name.removeprefix("backbone."): value for name, value in HAND.items()},
     ["one sparsity for every prunable layer"]),
    ({**HAND, "backbone.conv3": 90}, ["backbone.conv3 must be a number in [0, 1)"]),
    ({**HAND, "classifier": 1.0}, ["classifier must be a number in [0, 1)"]),
    (list(HAND.values()), ["expected a dict"]),
], ids=["over the budget", "below the bar", "names without backbone.", "a percentage",
        "a whole layer pruned", "a list"])
def test_sparsity_budget_names_typical_mistakes(answer, phrases):
    assert_fails(SPARSITY_BUDGET, lambda: answer, *phrases, seeds=[0])


# --- lab 05: limit_ratio --------------------------------------------------------------


def limit_float32(ratio, *, reducible_macs, fixed_macs, budget_macs, max_ratio):
    """The rule in float32 NumPy arithmetic, returned as a NumPy scalar."""
    one, budget, fixed, reducible = np.float32([1.0, budget_macs, fixed_macs, reducible_macs])
    r_min = one - (budget - fixed) / reducible
    return np.minimum(np.maximum.reduce([np.float32(ratio), r_min, np.float32(0)]),
                      np.float32(max_ratio))


def limit_branches(ratio, *, reducible_macs, fixed_macs, budget_macs, max_ratio):
    """Branches, with r_min as the MACs that must go over the reducible ones."""
    r_min = (reducible_macs + fixed_macs - budget_macs) / reducible_macs
    if ratio < r_min:
        ratio = r_min
    if ratio < 0:
        ratio = 0
    if ratio > max_ratio:
        ratio = max_ratio
    return ratio


def limit_tensor(ratio, *, reducible_macs, fixed_macs, budget_macs, max_ratio):
    """torch float32, clamped, returned as a 0-d tensor."""
    r_min = 1 - (torch.tensor(float(budget_macs)) - fixed_macs) / reducible_macs
    return torch.clamp(torch.maximum(torch.tensor(float(ratio)), r_min), 0.0, max_ratio)


@pytest.mark.parametrize("solution", [limit_float32, limit_branches, limit_tensor])
def test_limit_ratio_passes_other_styles(solution):
    assert first_failure(LIMIT_RATIO, solution) is None


def _limit(rule):
    """A limit_ratio whose last line is ``rule(ratio, r_min, max_ratio)``."""
    def limit(ratio, *, reducible_macs, fixed_macs, budget_macs, max_ratio):
        r_min = 1.0 - (budget_macs - fixed_macs) / reducible_macs
        return rule(ratio, r_min, max_ratio)
    return limit


@pytest.mark.parametrize("mistake, phrases", [
    (_limit(lambda r, r_min, top: min(max(r, r_min), top)), ["never below 0"]),
    (_limit(lambda r, r_min, top: max(min(r, top), r_min, 0.0)),
     ["budget out of reach: still capped at max_ratio"]),
    (_limit(lambda r, r_min, top: min(max(r, 1 - r_min, 0.0), top)),
     ["within the budget: unchanged: expected 0.3, got 0.75"]),
    (_limit(lambda r, r_min, top: min(max(r, 0.0), top)), ["raised to r_min"]),
    (_limit(lambda r, r_min, top: [min(max(r, r_min, 0.0), top)]), ["expected a number"]),
], ids=["no floor at 0", "clamp order", "r_min upside down", "r_min ignored", "a list"])
def test_limit_ratio_names_typical_mistakes(mistake, phrases):
    assert_fails(LIMIT_RATIO, mistake, *phrases)


# --- lab 05: the design challenge -------------------------------------------------------

GOOD_POLICY = lab_solutions("05_auto_pruning")["choose_ratios"]()
"""The lab's policy, from its exercise cell (its MACs and accuracy are in the lab's stored
outputs)."""


@pytest.mark.parametrize("answer", [
    lambda: [np.float64(r) for r in GOOD_POLICY],
    lambda: (0, *np.float32(GOOD_POLICY[1:])),
], ids=["NumPy float64", "a tuple of an int and float32"])
def test_policy_budget_passes_other_styles(answer):
    assert first_failure(POLICY_BUDGET, answer, seeds=[0]) is None


@pytest.mark.parametrize("answer, phrases", [
    ([0.1, 0.2, 0.4, 0.6], ["above the budget of 0.4"]),
    ([0.45] * 4, ["without finetuning", "points below the bar of 90.0%"]),
    (GOOD_POLICY[1:], ["expected a list of 4 pruning ratios"]),
    ([0, 40, 50, 60], ["ratio 1 must be a number in [0, 0.8]"]),
    ([0.0, 0.4, 0.5, 0.9], ["ratio 3 must be a number in [0, 0.8]"]),
    (dict(zip("abcd", GOOD_POLICY, strict=True)), ["expected a list of 4"]),
], ids=["over the budget", "below the bar", "three ratios", "percentages",
        "above max_ratio", "a dict"])
def test_policy_budget_names_typical_mistakes(answer, phrases):
    assert_fails(POLICY_BUDGET, lambda: answer, *phrases, seeds=[0])


# --- lab 06: agp_sparsity -------------------------------------------------------------


def agp_expanded(t, n, s_initial, s_final):
    """The cube written out, from the remaining fraction of the schedule."""
    left = (n - t) / n
    return s_final - (s_final - s_initial) * left * left * left


def agp_float32(t, n, s_initial, s_final):
    """float32 NumPy, returned as a NumPy scalar."""
    s_i, s_f, progress = np.float32([s_initial, s_final, t / n])
    return s_f + (s_i - s_f) * (np.float32(1) - progress) ** 3


def agp_loop(t, n, s_initial, s_final):
    """The cube as a loop, in a float64 tensor, returned as a 0-d tensor."""
    factor = torch.tensor(1.0, dtype=torch.float64)
    for _ in range(3):
        factor = factor * (1 - torch.tensor(t, dtype=torch.float64) / n)
    return s_final + (s_initial - s_final) * factor


@pytest.mark.parametrize("solution", [agp_expanded, agp_float32, agp_loop])
def test_agp_sparsity_passes_other_styles(solution):
    assert first_failure(AGP_SPARSITY, solution) is None


@pytest.mark.parametrize("mistake, phrases", [
    (lambda t, n, s_i, s_f: s_f + (s_i - s_f) * (1 - t / n) ** 2, ["half way, t = 5 of 10"]),
    (lambda t, n, s_i, s_f: s_f + (s_i - s_f) * (t / n) ** 3, ["t = 0 starts at s_initial"]),
    (lambda t, n, s_i, s_f: s_i + (s_f - s_i) * (1 - t / n) ** 3, ["t = 0 starts at s_initial"]),
    (lambda t, n, s_i, s_f: s_f + (s_i - s_f) * (1 - t // n) ** 3, ["half way, t = 5 of 10"]),
    (lambda t, n, s_i, s_f: s_f + (s_i - s_f) * (1 - (t + 1) / n) ** 3,
     ["t = 0 starts at s_initial"]),
    (lambda t, n, s_i, s_f: [s_f + (s_i - s_f) * (1 - t / n) ** 3], ["expected a number"]),
], ids=["squared", "t / n for 1 - t / n", "s_initial and s_final swapped",
        "integer division", "one step ahead", "a list"])
def test_agp_sparsity_names_typical_mistakes(mistake, phrases):
    assert_fails(AGP_SPARSITY, mistake, *phrases)


# --- lab 06: iterative_prune ----------------------------------------------------------


def iterative_torch_prune(model, sparsities, train_loader, val_loader, epochs_per_step=1):
    """torch.nn.utils.prune: L1 masks on the current weights (made permanent after each
    step, so the next step counts the zeros), kept during finetuning by torch's
    forward pre-hook; accuracies as NumPy scalars."""
    pruned = copy.deepcopy(model)
    layers = [m for m in pruned.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    accuracies = []
    for sparsity in sparsities:
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=sparsity)
        finetune(pruned, train_loader, val_loader, epochs=epochs_per_step, progress=False)
        for layer in layers:
            prune.remove(layer, "weight")
        accuracies.append(np.float64(evaluate(pruned, val_loader)))
    return pruned, accuracies


def iterative_explicit_masks(model, sparsities, train_loader, val_loader, epochs_per_step=1):
    """Masks written out with topk on float64 magnitudes, a Pruner from them, the
    accuracy counted in float32; a tuple of accuracies."""
    pruned = copy.deepcopy(model)
    accuracies = ()
    for sparsity in sparsities:
        masks = {}
        for name, parameter in pruned.named_parameters():
            if name.endswith("weight"):
                magnitude = parameter.detach().double().abs().flatten()
                keep = magnitude.numel() - round(magnitude.numel() * sparsity)
                mask = torch.zeros_like(magnitude, dtype=torch.bool)
                mask[magnitude.topk(keep).indices] = True
                masks[name] = mask.reshape(parameter.shape)
        pruner = Pruner(pruned, masks)
        pruner.apply()
        finetune(pruned, train_loader, val_loader, epochs=epochs_per_step,
                 after_step=[pruner], progress=False)
        accuracies += (accuracy_float32(pruned, val_loader),)
    return pruned, accuracies


@pytest.mark.parametrize("solution", [iterative_torch_prune, iterative_explicit_masks])
def test_iterative_prune_passes_other_styles(solution):
    assert first_failure(ITERATIVE_PRUNE, solution) is None


def _iterative(*, copy_model=True, keep_masks=True, tune=True, steps=slice(None),
               scale=1.0):
    """The lab's loop with one thing done wrong."""
    def iterative_prune(model, sparsities, train_loader, val_loader, epochs_per_step=1):
        pruned = copy.deepcopy(model) if copy_model else model
        accuracies = []
        for sparsity in sparsities[steps]:
            pruner = Pruner.from_sparsity(pruned, sparsity)
            pruner.apply()
            if tune:
                finetune(pruned, train_loader, val_loader, epochs=epochs_per_step,
                         after_step=[pruner] if keep_masks else [], progress=False)
            accuracies.append(evaluate(pruned, val_loader) * scale)
        return pruned, accuracies
    return iterative_prune


@pytest.mark.parametrize("mistake, phrases", [
    (_iterative(copy_model=False), ["a new model: expected True, got False"]),
    (_iterative(keep_masks=False), ["layer sparsities: item 0"]),
    (_iterative(tune=False), ["surviving weights finetuned: expected True, got False"]),
    (_iterative(steps=slice(1, None)), ["layer sparsities: item 0"]),
    (_iterative(steps=slice(-1, None)), ["steps [0.3, 0.6, 0.9]",
                                         "accuracies returned: expected 3, got 1"]),
    (_iterative(scale=0.01), ["last accuracy is the returned model's: expected True"]),
], ids=["prunes the input", "masks not kept", "no finetuning", "skips the first step",
        "one shot to the last sparsity", "a fraction for a percentage"])
def test_iterative_prune_names_typical_mistakes(mistake, phrases):
    assert_fails(ITERATIVE_PRUNE, mistake, *phrases, seeds=[0])


def test_the_seeds_include_rounding_ties_that_failed_right_answers():
    """Comparing ``round(k / n, 4)`` with ``round(1 - (n - k) / n, 4)`` (the rounded
    sparsity) failed right answers where the two land on both sides of a rounding tie; the
    check now divides the same counts the same way, and the 50 seeds above include such
    cases."""
    def tied(sparsity):
        return any(round(round(n * sparsity) / n, 4) !=
                   round(1 - (n - round(n * sparsity)) / n, 4) for n in SIZES)

    hidden = [case for seed in SEEDS
              for case in core.all_cases(ITERATIVE_PRUNE, seed)[len(ITERATIVE_PRUNE.cases()):]]
    assert any(tied(case.args[0][-1]) for case in hidden)
