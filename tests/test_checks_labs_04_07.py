"""The checks of labs 04-07: a one-layer sensitivity scan, the size-budget and MAC-budget
design challenges (judged by outcome), and EIE's lock-step cycle count."""

import copy

import pytest
import torch

from labkit.grading import checks
from labkit.grading.checks import amc as amc_checks
from labkit.grading.checks import core
from labkit.grading.checks import hardware as hardware_checks
from labkit.grading.checks import sensitivity as sensitivity_checks
from labkit.hardware import eie
from labkit.pruning.granularity import fine_grained_mask
from labkit.training import evaluate

ALLOCATED = {"backbone.conv0": 0.1, "backbone.conv1": 0.7, "backbone.conv2": 0.65,
             "backbone.conv3": 0.9, "classifier": 0.15}
"""The lab's allocator, run with the bitmask index: within the budget, above the bar."""


def scan_layer(model, name, sparsities, val_loader):
    """The instructor solution of lab 04's exercise."""
    pruned = copy.deepcopy(model)
    layer = dict(pruned.named_modules())[name]
    original = layer.weight.detach().clone()
    accuracies = []
    for sparsity in sparsities:
        with torch.no_grad():
            layer.weight.copy_(original * fine_grained_mask(original, sparsity))
        accuracies.append(evaluate(pruned, val_loader))
    return accuracies


def lockstep_cycles(encoded, activations):
    """The instructor solution of lab 07's exercise."""
    entries = torch.stack([pe.column_pointers.diff() for pe in encoded.pes])
    broadcast = entries[:, activations != 0]
    return int(broadcast.amax(dim=0).sum()) if broadcast.numel() else 0, broadcast.sum(dim=1)


def test_solutions_pass_with_one_line_each(capsys):
    checks.check_scan_layer(scan_layer)
    checks.check_lockstep_cycles(lockstep_cycles)
    assert capsys.readouterr().out.splitlines() == [
        "scan_layer: 4/4 cases passed", "lockstep_cycles: 7/7 cases passed"]


@pytest.mark.parametrize("check, solution", [
    (sensitivity_checks.SCAN_LAYER, scan_layer),
    (hardware_checks.LOCKSTEP_CYCLES, lockstep_cycles),
])
def test_solutions_pass_the_hidden_cases(check, solution):
    for case in core.all_cases(check, seed=11):
        expected = core.expected_outcome(check, case)
        assert check.compare(expected, core.outcome(check, solution, case)) is None, case.name


def test_public_answers_hard_coded_fail_the_hidden_cases():
    check = hardware_checks.LOCKSTEP_CYCLES
    public = {case.name: lockstep_cycles(*case.args) for case in check.cases()}
    by_cycles = {}
    for case in check.cases():
        by_cycles[len(case.args[1])] = public[case.name]

    def memorised(encoded, activations):
        return by_cycles.get(len(activations), (0, torch.zeros(encoded.num_pes,
                                                               dtype=torch.int64)))

    hidden = [case for case in core.all_cases(check, seed=3) if case.name.startswith("hidden")]
    assert hidden
    assert any(check.compare(core.expected_outcome(check, case),
                             core.outcome(check, memorised, case)) for case in hidden)


def test_a_scan_that_prunes_one_weight_too_many_names_the_accuracies():
    def one_more(model, name, sparsities, val_loader):
        pruned = copy.deepcopy(model)
        layer = dict(pruned.named_modules())[name]
        original = layer.weight.detach().clone()
        accuracies = []
        for sparsity in sparsities:
            keep = original.abs().flatten().argsort(descending=True)
            mask = torch.zeros(original.numel(), dtype=torch.bool)
            mask[keep[:original.numel() - round(original.numel() * sparsity) - 1]] = True
            with torch.no_grad():
                layer.weight.copy_(original * mask.reshape(original.shape))
            accuracies.append(evaluate(pruned, val_loader))
        return accuracies

    with pytest.raises(checks.CheckFailed, match=r"accuracies: item \d: expected [\d.]+, got"):
        checks.check_scan_layer(one_more)


def test_a_scan_that_prunes_the_caller_s_model_is_named():
    def in_place(model, name, sparsities, val_loader):
        layer = dict(model.named_modules())[name]
        with torch.no_grad():
            for sparsity in sparsities:
                layer.weight.mul_(fine_grained_mask(layer.weight, sparsity))
        return scan_layer(model, name, sparsities, val_loader)

    with pytest.raises(checks.CheckFailed, match="model unchanged: expected True, got False"):
        checks.check_scan_layer(in_place)


def test_a_scan_returning_a_tuple_is_told_to_return_a_list():
    with pytest.raises(checks.CheckFailed, match="expected a list, got"):
        checks.check_scan_layer(lambda *args: tuple(scan_layer(*args)))


def test_cycles_as_a_tensor_name_the_type():
    def tensor_cycles(encoded, activations):
        cycles, work = lockstep_cycles(encoded, activations)
        return torch.tensor(cycles), work

    with pytest.raises(checks.CheckFailed, match=r"item 0: expected \d+, got tensor"):
        checks.check_lockstep_cycles(tensor_cycles)


def test_work_as_float_names_the_dtype():
    def float_work(encoded, activations):
        cycles, work = lockstep_cycles(encoded, activations)
        return cycles, work.float()

    with pytest.raises(checks.CheckFailed, match="expected dtype torch.int64, got dtype "
                                                 "torch.float32"):
        checks.check_lockstep_cycles(float_work)


def test_cycles_that_ignore_skipped_activations_fail_on_that_case():
    def no_skipping(encoded, activations):
        return lockstep_cycles(encoded, torch.ones_like(activations))

    with pytest.raises(checks.CheckFailed, match="zero activations are not broadcast"):
        checks.check_lockstep_cycles(no_skipping)


def test_cycles_as_total_work_over_pes_name_the_difference():
    def balanced(encoded, activations):
        cycles, work = lockstep_cycles(encoded, activations)
        return int(work.sum()) // encoded.num_pes, work

    with pytest.raises(checks.CheckFailed, match=r"item 0: expected \d+, got \d+"):
        checks.check_lockstep_cycles(balanced)


def test_reference_agrees_with_the_simulator():
    weight = torch.tensor([[1.0, 0.0], [2.0, 3.0], [0.0, 4.0]])
    encoded = eie.encode_eie(weight, 2)
    report = eie.simulate_spmv(encoded, torch.tensor([1.0, 1.0]))
    cycles, work = lockstep_cycles(encoded, torch.tensor([1.0, 1.0]))
    assert cycles == report.cycles and torch.equal(work, report.work_per_pe)


def test_the_budget_challenge_passes_a_choice_within_budget_and_above_the_bar(capsys):
    checks.check_sparsity_budget(ALLOCATED)
    assert capsys.readouterr().out == "sparsity_budget: 1/1 cases passed\n"


def test_the_budget_challenge_says_by_how_much_the_size_misses():
    over = {**ALLOCATED, "backbone.conv3": 0.5}
    with pytest.raises(checks.CheckFailed, match=r"bitmask index .* keeps 0\.\d+ of the dense "
                                                 r"size, 0\.\d+ above the budget of 0.25"):
        checks.check_sparsity_budget(over)


def test_the_budget_challenge_says_by_how_much_the_accuracy_misses():
    uniform = dict.fromkeys(ALLOCATED, 0.8)
    message = sensitivity_checks.judge_sparsity_budget(None, uniform)
    assert "points below the bar of 98.5%" in message
    assert "2-epoch finetune" in message


@pytest.mark.parametrize("sparsities, match", [
    ({"backbone.conv0": 0.5}, "one sparsity for every prunable layer"),
    ({**ALLOCATED, "classifier": 1.0}, r"classifier must be a number in \[0, 1\)"),
    ([0.5] * 5, "expected a dict"),
])
def test_the_budget_challenge_names_a_malformed_answer(sparsities, match):
    with pytest.raises(checks.CheckFailed, match=match):
        checks.check_sparsity_budget(sparsities)


def test_the_budget_challenge_refuses_another_budget():
    with pytest.raises(checks.CheckFailed, match="the graded budget is 0.25"):
        checks.check_sparsity_budget(ALLOCATED, None, 0.5)


def test_the_budget_challenge_is_deterministic():
    assert sensitivity_checks.finetuned_accuracy(*_vgg_and(ALLOCATED)) == \
        sensitivity_checks.finetuned_accuracy(*_vgg_and(ALLOCATED))


def _vgg_and(sparsities):
    from labkit import zoo
    return zoo.pretrained("vgg-digits", progress=False), sparsities


def test_the_policy_challenge_passes_a_good_policy(capsys):
    checks.check_policy_budget([0.0, 0.4, 0.5, 0.6])
    assert capsys.readouterr().out == "policy_budget: 1/1 cases passed\n"


def test_the_policy_challenge_says_by_how_much_the_macs_miss():
    with pytest.raises(checks.CheckFailed, match=r"keeps 0\.\d+ of the dense MACs, 0\.\d+ "
                                                 r"above the budget of 0.4"):
        checks.check_policy_budget([0.1, 0.2, 0.4, 0.6])


def test_the_policy_challenge_says_by_how_much_the_accuracy_misses():
    with pytest.raises(checks.CheckFailed, match=r"points below the bar of 90.0%"):
        checks.check_policy_budget([0.45] * 4)


@pytest.mark.parametrize("ratios, match", [
    ([0.5] * 3, "expected a list of 4 pruning ratios"),
    ([0.5, 0.5, 0.5, 0.9], r"ratio 3 must be a number in \[0, 0.8\]"),
    ({"conv0": 0.5}, "expected a list of 4"),
])
def test_the_policy_challenge_names_a_malformed_answer(ratios, match):
    with pytest.raises(checks.CheckFailed, match=match):
        checks.check_policy_budget(ratios)


def test_the_policy_outcome_is_deterministic():
    assert amc_checks.policy_outcome([0.0, 0.4, 0.5, 0.6]) == \
        amc_checks.policy_outcome([0.0, 0.4, 0.5, 0.6])


def test_the_challenges_take_the_student_s_function_and_wait_for_it(capsys):
    def unfinished():
        raise NotImplementedError

    checks.check_policy_budget(lambda: [0.0, 0.4, 0.5, 0.6])
    checks.check_policy_budget(unfinished)
    checks.check_sparsity_budget(unfinished)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "policy_budget: 1/1 cases passed"
    assert lines[1].startswith("policy_budget: not done yet")
    assert lines[2].startswith("sparsity_budget: not done yet")
