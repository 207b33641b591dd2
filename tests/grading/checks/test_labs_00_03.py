"""The checks of labs 00-03 against typical mistakes: a wrong dtype, a changed input, an
off-by-one count and a half-done channel sort are named; public answers hard-coded fail
the hidden cases. (The labs' solutions and others pass: test_alternative_solutions.)"""

import copy

import pytest
import torch

from labkit.grading import checks
from labkit.grading.checks import CHECKS, core
from labkit.pruning import channels
from tests.support.lab_submissions import lab_solutions


def failure(check, function, seed=0):
    """The first failing case of ``function`` over the public and hidden cases, or None."""
    for case in core.all_cases(check, seed):
        problem = check.compare(core.expected_outcome(check, case),
                                core.outcome(check, function, case))
        if problem:
            return f"{case.name}: {problem}"
    return None


def test_an_off_by_one_count_names_both_kept_counts():
    reference = CHECKS["check_fine_grained_mask"].reference

    def one_too_few(weight, sparsity):
        mask = reference(weight, sparsity)
        flat = mask.flatten().clone()
        flat[int(flat.nonzero()[0])] = False
        return flat.reshape(mask.shape) if sparsity > 0 else mask

    with pytest.raises(checks.CheckFailed) as raised:
        checks.check_fine_grained_mask(one_too_few)
    assert "kept (True) elements: expected" in str(raised.value)


def test_a_float_mask_from_scatter_is_named_as_a_dtype_error():
    nm_mask = lab_solutions("01_granularity")["nm_mask"]

    def float_mask(weight, n, m):
        return nm_mask(weight, n, m).float()

    with pytest.raises(checks.CheckFailed, match="expected dtype torch.bool, got dtype "
                                                 "torch.float32"):
        checks.check_nm_mask(float_mask)


def test_a_float64_importance_is_named_as_a_dtype_error():
    importance = lab_solutions("03_neuron_pruning")["get_input_channel_importance"]
    with pytest.raises(checks.CheckFailed, match="expected dtype torch.float32, got dtype "
                                                 "torch.float64"):
        checks.check_input_channel_importance(lambda weight: importance(weight).double())


def test_changing_the_weight_in_place_is_caught():
    fine_grained_mask = lab_solutions("01_granularity")["fine_grained_mask"]

    def in_place(weight, sparsity):
        mask = fine_grained_mask(weight, sparsity)
        weight.abs_()
        return mask

    message = failure(CHECKS["check_fine_grained_mask"], in_place)
    assert message and "changed its tensor argument" in message


def test_a_sort_that_forgets_the_batchnorm_says_what_to_permute():
    importance = lab_solutions("03_neuron_pruning")["get_input_channel_importance"]

    def forgets_batchnorm(model):
        model = copy.deepcopy(model)
        blocks = channels.conv_blocks(model)
        convs = [getattr(model.backbone, conv) for conv, _ in blocks]
        with torch.no_grad():
            for conv, next_layer in zip(convs, convs[1:] + [model.classifier], strict=True):
                order = torch.argsort(importance(next_layer.weight), descending=True)
                conv.weight.copy_(conv.weight[order])
                next_layer.weight.copy_(next_layer.weight[:, order])
        return model

    with pytest.raises(checks.CheckFailed, match="permute conv, BatchNorm and the next layer"):
        checks.check_channel_sorting(forgets_batchnorm)


@pytest.mark.parametrize("name", ["check_fine_grained_mask", "check_nm_mask",
                                  "check_get_sparsity", "check_row_norm",
                                  "check_input_channel_importance", "check_apoz"])
def test_public_answers_hard_coded_fail_the_hidden_cases(name):
    check = CHECKS[name]
    public = [(case, core.expected_outcome(check, case)) for case in check.cases()]

    def memorised(*args):
        for case, answer in public:
            if len(case.args) == len(args) and all(
                    type(a) is type(b) and (torch.equal(a, b) if isinstance(a, torch.Tensor)
                                            else a == b) for a, b in zip(case.args, args,
                                                                         strict=True)):
                if isinstance(answer, dict):
                    raise ValueError(answer.get("text", "bad argument"))
                return answer
        return torch.zeros(0)

    assert all(check.compare(answer, core.outcome(check, memorised, case)) is None
               for case, answer in public)
    assert failure(check, memorised, seed=3) is not None
