"""The check machinery: declarations, feedback that names the difference, the two modes."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from labkit import measure
from labkit.grading import checks, referee
from labkit.grading.checks import core
from labkit.grading.checks.core import Case, Check
from labkit.pruning import granularity


def parameter_bits(model, data_width=32, count_nonzero_only=False):
    """A correct get_model_size returning a 0-d tensor."""
    return sum((p != 0).sum() if count_nonzero_only else torch.tensor(p.numel())
               for p in model.parameters()) * data_width


def test_hidden_cases_depend_on_the_seed_and_only_on_it():
    check = checks.CHECKS["check_fine_grained_mask"]
    first, again, other = (core.all_cases(check, seed) for seed in (1, 1, 2))
    assert [c.name for c in first] == [c.name for c in again]
    assert all(torch.equal(a.args[0], b.args[0]) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a.args[0], b.args[0]) or a.args[1] != b.args[1]
               for a, b in zip(first, other, strict=True) if a.name.startswith("hidden"))


def test_correct_functions_print_one_line(capsys):
    checks.check_get_sparsity(lambda tensor: np.mean(tensor.numpy() == 0))
    checks.check_get_model_size(parameter_bits)
    assert capsys.readouterr().out.splitlines() == [
        "get_sparsity: 7/7 cases passed", "get_model_size: 12/12 cases passed"]


def test_an_off_by_one_mask_names_the_count_rule_the_index_and_both_counts():
    def keeps_one_more(weight, sparsity):
        mask = granularity.fine_grained_mask(weight, sparsity)
        if mask.numel() == 288:
            mask.view(-1)[int((~mask).flatten().nonzero()[0])] = True
        return mask

    with pytest.raises(checks.CheckFailed) as failure:
        checks.check_fine_grained_mask(keeps_one_more)
    assert str(failure.value) == (
        "fine_grained_mask: case 'exact zero count: 4-d conv weight at 70% prunes "
        "round(288 * 0.7) = 202' failed: 1 of 288 elements differ; the first at index "
        "(0, 0, 0, 0): expected False, got True; kept (True) elements: expected 86, got 87")


def test_an_inverted_mask_says_how_many_differ():
    with pytest.raises(checks.CheckFailed, match=r"16 of 16 elements differ.*expected True, got "
                                                 r"False.*expected 16, got 0"):
        checks.check_fine_grained_mask(lambda w, s: ~granularity.fine_grained_mask(w, s))


def test_a_wrong_dtype_is_named():
    with pytest.raises(checks.CheckFailed, match="expected dtype torch.bool, got dtype "
                                                 "torch.float32"):
        checks.check_fine_grained_mask(lambda w, s: granularity.fine_grained_mask(w, s).float())


def test_changing_the_input_in_place_is_caught():
    def in_place(weight, sparsity):
        mask = granularity.fine_grained_mask(weight, sparsity)
        weight.mul_(mask)
        return mask

    with pytest.raises(checks.CheckFailed, match="changed its tensor argument 0 in place"):
        checks.check_fine_grained_mask(in_place)


def test_a_student_exception_shows_the_student_error_not_labkit_frames():
    with pytest.raises(checks.CheckFailed, match="raised ZeroDivisionError: division by zero"):
        checks.check_get_sparsity(lambda t: 1 / 0)


def test_unfinished_check_says_not_done_yet_without_raising(capsys):
    def todo(tensor):
        raise NotImplementedError()

    checks.check_get_sparsity(todo)
    assert capsys.readouterr().out == ("get_sparsity: not done yet (finish the exercise above, "
                                       "then run this cell again)\n")


def test_failures_render_as_their_message_alone():
    error = core.CheckFailed("row_norm: case 'x' failed: expected 1, got 2\nsecond line")
    assert error._render_traceback_() == ["row_norm: case 'x' failed: expected 1, got 2",
                                          "second line"]


def test_a_fault_in_the_reference_is_not_blamed_on_the_student():
    broken = Check("broken", reference=lambda x: 1 / 0, cases=lambda: [Case("one", (1,))],
                   hidden=lambda seed: [])
    with pytest.raises(core.CheckError, match="fault in the check, not in your code"):
        core.run(broken, lambda x: 1)


def test_not_a_function_is_refused_by_name():
    with pytest.raises(checks.CheckFailed, match="get_sparsity: expected a function, got float"):
        checks.check_get_sparsity(0.5)


@pytest.mark.parametrize(("value", "plain_type"), [
    (torch.tensor([1.0]), torch.Tensor), (3, int), ([1, (2.0, "a")], list), ({"k": None}, dict)])
def test_plain_keeps_safe_values(value, plain_type):
    assert type(core.plain(value)) is plain_type


def test_plain_turns_other_objects_into_a_description():
    class Sneaky:
        def __eq__(self, other):
            return True

    sneaky = Sneaky()
    assert core.plain(sneaky) == {"outcome": "unsupported", "type": "Sneaky",
                                  "text": repr(sneaky)}
    assert core.plain({1: 2})["outcome"] == "unsupported"


def test_needs_names_the_unfinished_exercise_in_one_line(capsys):
    def get_sparsity(tensor):
        raise NotImplementedError()

    def other(x):
        return x

    with checks.needs(get_sparsity, other):
        get_sparsity(torch.zeros(2))
    assert capsys.readouterr().out == ("This cell needs get_sparsity: finish that exercise "
                                       "first, then run this cell again.\n")


def test_grading_mode_records_outcomes_and_the_referee_judges_them(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setenv(core.GRADING_DIR, str(tmp_path))
    monkeypatch.setenv(core.GRADING_SEED, "5")
    checks.check_get_sparsity(lambda tensor: measure.get_sparsity(tensor))
    assert capsys.readouterr().out == f"get_sparsity: {core.RECORDED}\n"
    assert referee.judge("check_get_sparsity", tmp_path, 5) == referee.Verdict(True)
    assert not referee.judge("check_get_sparsity", tmp_path, 6).passed  # other hidden cases

    public = {tuple(c.args[0].flatten().tolist()): measure.get_sparsity(c.args[0])
              for c in checks.CHECKS["check_get_sparsity"].cases()}
    checks.check_get_sparsity(lambda t: public.get(tuple(t.flatten().tolist()), 0.0))
    verdict = referee.judge("check_get_sparsity", tmp_path, 5)
    assert not verdict.passed and "hidden case" in verdict.message


def test_the_referee_refuses_missing_forged_and_reference_results(tmp_path, monkeypatch):
    assert referee.judge("check_get_sparsity", tmp_path, 0).message.startswith(
        "no results were recorded")
    (tmp_path / "get_sparsity.pt").write_bytes(b"not a pickle")
    assert "unreadable" in referee.judge("check_get_sparsity", tmp_path, 0).message
    torch.save({"cases": ["x"], "outcomes": [1.0]}, tmp_path / "get_sparsity.pt")
    assert referee.judge("check_get_sparsity", tmp_path, 0).message == (
        "the recorded cases are not the check's cases")
    monkeypatch.setenv(core.GRADING_DIR, str(tmp_path))
    checks.check_get_sparsity(measure.get_sparsity)
    assert "labkit's own function" in referee.judge("check_get_sparsity", tmp_path, 0).message


@pytest.mark.parametrize("number", [np.float64(0.25), np.float32(0.25), 0.25, 1 / 4])
def test_numpy_and_python_floats_record_as_plain_floats(number, tmp_path):
    torch.save(core.plain(number), tmp_path / "x.pt")
    assert type(torch.load(tmp_path / "x.pt", weights_only=True)) is float


@pytest.mark.parametrize(("number", "plain_number"), [
    (np.int64(3), 3), (np.bool_(True), True), (Fraction(1, 4), 0.25)])
def test_numbers_python_accepts_become_plain_numbers(number, plain_number):
    assert core.plain(number) == plain_number
    assert type(core.plain(number)) is type(plain_number)


@pytest.mark.parametrize("actual", [0.6458333333333334, np.float32(0.6458333), 0.6458339,
                                    torch.tensor(0.6458333, dtype=torch.float32)])
def test_a_float_computed_in_float32_or_another_order_agrees(actual):
    assert core.close()(0.6458333333333333, core.plain(actual)) is None


@pytest.mark.parametrize(("expected", "actual", "message"), [
    (0.5, "abc", "expected a number, got a str 'abc'"),
    (0.5, True, "expected a number, got a bool True"),
    (0.5, 0.5001, "expected 0.5, got 0.5001"),
    (3, 3.0, "expected an int, got a float 3.0"),
    (3, torch.tensor(3.0), "expected an int, got a torch.float32 tensor 3.0"),
    (3, np.int64(4), "expected 3, got 4"),
])
def test_numbers_of_the_wrong_kind_or_value_are_named(expected, actual, message):
    assert core.close()(expected, core.plain(actual)) == message


@pytest.mark.parametrize(("expected", "actual"), [(2, torch.tensor(2)), (0.5, 0.5),
                                                  (1.0, 1), (2.0, torch.tensor(2.0))])
def test_an_int_or_a_0d_tensor_where_a_number_is_expected_agrees(expected, actual):
    assert core.close()(expected, core.plain(actual)) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_tensors_agree_within_a_few_ulps_of_their_dtype(dtype):
    expected = torch.linspace(-3, 3, 7, dtype=dtype)
    ulp = torch.finfo(dtype).eps
    assert core.close()(expected, expected * (1 + 8 * ulp)) is None
    assert core.close()(expected, expected + 1e3 * ulp) is not None
    assert core.exact(expected, expected * (1 + 8 * ulp)) is not None


def test_an_infinite_element_agrees_only_with_itself():
    expected = torch.tensor([1.0, float("inf"), float("nan")])
    assert core.close()(expected, expected.clone()) is None
    assert "expected inf, got 5.0" in core.close()(expected, torch.tensor([1.0, 5.0, 0.0]))


def test_integer_and_bool_tensors_compare_exactly_under_close():
    assert "1 of 3 elements differ" in core.close()(torch.tensor([1, 2, 3]),
                                                    torch.tensor([1, 2, 4]))
    assert "kept (True) elements" in core.close()(torch.tensor([True, False]),
                                                  torch.tensor([True, True]))
