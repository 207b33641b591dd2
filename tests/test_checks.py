import pytest
import torch

from labkit import measure
from labkit.grading import checks


def reference_model_size(model, data_width, count_nonzero_only):
    return measure.model_size_bits(model, data_width, count_nonzero_only=count_nonzero_only)


def test_correct_functions_print_one_line(capsys):
    checks.check_get_sparsity(measure.get_sparsity)
    checks.check_get_model_size(reference_model_size)
    assert capsys.readouterr().out.splitlines() == [
        "get_sparsity: 6/6 cases passed",
        "get_model_size: 12/12 cases passed",
    ]


def test_wrong_answer_names_the_case_expected_and_actual():
    def density(tensor):
        return tensor.count_nonzero().item() / tensor.numel()

    expected = r"case 'all non-zero' failed: expected 0\.0, got 1\.0"
    with pytest.raises(checks.CheckFailed, match=expected):
        checks.check_get_sparsity(density)


def test_size_ignoring_nonzero_flag_fails_on_the_pruned_case():
    def dense_only(model, data_width, count_nonzero_only):
        return measure.model_size_bits(model, data_width)

    with pytest.raises(checks.CheckFailed, match="count_nonzero_only=True"):
        checks.check_get_model_size(dense_only)


def test_unimplemented_and_crashing_functions():
    def todo(tensor):
        raise NotImplementedError()

    with pytest.raises(checks.CheckFailed, match="not implemented yet"):
        checks.check_get_sparsity(todo)
    with pytest.raises(checks.CheckFailed, match="raised ZeroDivisionError"):
        checks.check_get_sparsity(lambda t: 1 / 0)


def test_wrong_type_fails():
    with pytest.raises(checks.CheckFailed, match="expected 0"):
        checks.run_check("n", lambda: "0", [checks.Case("int", (), 0)])


def test_tensor_results_compare_shape_dtype_and_values(capsys):
    case = checks.Case("t", (), torch.tensor([True, False]))
    checks.run_check("mask", lambda: torch.tensor([True, False]), [case])
    assert capsys.readouterr().out == "mask: 1/1 cases passed\n"
    with pytest.raises(checks.CheckFailed, match="dtype=torch.int64"):
        checks.run_check("mask", lambda: torch.tensor([1, 0]), [case])


def test_not_a_function():
    with pytest.raises(TypeError, match="expected a function"):
        checks.check_get_sparsity(0.5)
