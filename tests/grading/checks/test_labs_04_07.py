"""The checks of labs 04-07 on the labs' own solutions (read from the instructor
notebooks): every public and hidden case passes, each check cell prints its one line, the
checks that train or evaluate give the same number on every call and the number the lab's
tables show; EIE's lock-step cycle count against typical mistakes. Other correct styles
and the typical mistakes of labs 04-06 are in test_alternative_solutions_training.py."""

import html
import re

import nbformat
import pytest
import torch

from labkit import data, zoo
from labkit.grading import checks
from labkit.grading.checks import amc as amc_checks
from labkit.grading.checks import core
from labkit.grading.checks import hardware as hardware_checks
from labkit.grading.checks import schedule as schedule_checks
from labkit.grading.checks import sensitivity as sensitivity_checks
from labkit.hardware import eie
from labkit.pruning import sensitivity
from labkit.training import evaluate
from tests.support.lab_submissions import lab_solutions
from tests.support.paths import LABS

LAB04, LAB05, LAB06, LAB07 = (lab_solutions(stem) for stem in
                               ("04_sensitivity", "05_auto_pruning", "06_finetune_loop",
                                "07_hardware_eie"))
lockstep_cycles = LAB07["lockstep_cycles"]


def table_row(stem, cell_id, row):
    """The cells of one row of the HTML table a lab's code cell shows, as text."""
    cell = next(c for c in nbformat.read(LABS / f"{stem}.ipynb", as_version=4).cells
                if c.id == cell_id)
    table = "".join(output["data"]["text/html"] for output in cell.outputs
                    if "text/html" in output.get("data", {}))
    for found in re.findall(r"<tr>(.*?)</tr>", table, re.S):
        cells = [html.unescape(re.sub("<.*?>", "", text)).strip()
                 for text in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", found, re.S)]
        if cells and cells[0] == row:
            return cells[1:]
    raise AssertionError(f"{stem}:{cell_id} shows no row {row!r}")


def test_the_labs_check_cells_print_one_line_each(capsys):
    checks.check_scan_layer(LAB04["scan_layer"])
    checks.check_sparsity_budget(LAB04["choose_sparsities"], None, LAB04["budget"])
    checks.check_limit_ratio(LAB05["limit_ratio"])
    checks.check_policy_budget(LAB05["choose_ratios"])
    checks.check_agp_sparsity(LAB06["agp_sparsity"])
    checks.check_iterative_prune(LAB06["iterative_prune"])
    checks.check_lockstep_cycles(lockstep_cycles)
    assert capsys.readouterr().out.splitlines() == [
        "scan_layer: 5/5 cases passed", "sparsity_budget: 1/1 cases passed",
        "limit_ratio: 8/8 cases passed", "policy_budget: 1/1 cases passed",
        "agp_sparsity: 8/8 cases passed", "iterative_prune: 2/2 cases passed",
        "lockstep_cycles: 7/7 cases passed"]


@pytest.mark.parametrize("check, solution", [
    (sensitivity_checks.SCAN_LAYER, LAB04["scan_layer"]),
    (amc_checks.LIMIT_RATIO, LAB05["limit_ratio"]),
    (schedule_checks.AGP_SPARSITY, LAB06["agp_sparsity"]),
    (schedule_checks.ITERATIVE_PRUNE, LAB06["iterative_prune"]),
    (hardware_checks.LOCKSTEP_CYCLES, lockstep_cycles),
], ids=["scan_layer", "limit_ratio", "agp_sparsity", "iterative_prune", "lockstep_cycles"])
def test_the_labs_solutions_pass_the_hidden_cases(check, solution):
    for seed in (3, 11):
        for case in core.all_cases(check, seed):
            expected = core.expected_outcome(check, case)
            actual = core.outcome(check, solution, case)
            assert check.compare(expected, actual) is None, (seed, case.name)


# --- what trains or evaluates gives one number, the one the lab shows -------------------


def test_the_budget_challenge_scores_the_lab_s_seed_0_column():
    """The check's finetune, from fresh loaders, gives the number lab 04's table shows in
    its "seed 0, the check's" column, and so does the lab's call on a loader that has
    been iterated and used to finetune before (the shuffle follows the seed)."""
    model = zoo.pretrained("vgg-digits", progress=False)
    choice = LAB04["choose_sparsities"]()
    scored = sensitivity_checks.finetuned_accuracy(model, choice)
    assert scored == sensitivity_checks.finetuned_accuracy(model, choice)
    train_loader, val_loader, _ = data.load("digits").loaders(batch_size=64)
    next(iter(train_loader))
    for seed in (1, 0):
        tuned = sensitivity.finetuned_pruned_model(model, choice, train_loader, val_loader,
                                                   epochs=2, seed=seed)
    assert evaluate(tuned, val_loader) == scored
    shown = table_row("04_sensitivity", "l04-finetune", "by hand")
    assert shown[2] == f"{scored:.2f}" and scored >= sensitivity_checks.ACCURACY_BAR


def test_the_policy_challenge_scores_what_the_lab_prints():
    ratios = LAB05["choose_ratios"]()
    macs, accuracy = amc_checks.policy_outcome(ratios)
    assert (macs, accuracy) == amc_checks.policy_outcome(ratios)
    cell = next(c for c in nbformat.read(LABS / "05_auto_pruning.ipynb", as_version=4).cells
                if c.id == "a5-challenge-show")
    printed = "".join(output.get("text", "") for output in cell.outputs)
    assert f"yours    {ratios}: {macs:.3f} of the MACs, validation accuracy {accuracy:.2f}%" \
        in printed


def test_iterative_prune_repeats_exactly_on_one_loader():
    """The lab's loop twice on the same loaders (each finetune with the default seed):
    the same accuracies and weights, whatever the loader's generator went through."""
    splits = data.load("digits")
    train_loader, val_loader, _ = splits.loaders(batch_size=64)
    model = zoo.pretrained("vgg-digits", progress=False)
    runs = []
    for _ in range(2):
        pruned, accuracies = LAB06["iterative_prune"](model, [0.5, 0.8], train_loader,
                                                      val_loader, 1)
        runs.append((accuracies, pruned.state_dict()))
        torch.rand(3)
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][key], runs[1][1][key]) for key in runs[0][1])


def test_the_budget_challenge_refuses_another_budget():
    with pytest.raises(checks.CheckFailed, match="the graded budget is 0.25"):
        checks.check_sparsity_budget(LAB04["choose_sparsities"], None, 0.5)


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


# --- lab 07: EIE's lock-step cycle count -------------------------------------------------


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


def test_cycles_as_a_float_tensor_name_the_type():
    def float_cycles(encoded, activations):
        cycles, work = lockstep_cycles(encoded, activations)
        return torch.tensor(float(cycles)), work

    with pytest.raises(checks.CheckFailed, match="item 0: expected an int, got a "
                                                 "torch.float32 tensor"):
        checks.check_lockstep_cycles(float_cycles)


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
