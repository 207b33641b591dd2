import pytest

from labkit.validation import check_count, check_sparsity


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_sparsities_in_range_pass(value):
    check_sparsity(value)


@pytest.mark.parametrize("value, error", [(1.0, ValueError), (-0.1, ValueError),
                                          (True, TypeError), ("0.5", TypeError)])
def test_bad_sparsity_names_the_argument(value, error):
    with pytest.raises(error, match="ratio"):
        check_sparsity(value, "ratio")


def test_counts():
    check_count(0, "epochs", 0)
    with pytest.raises(ValueError, match=r"epochs must be an int >= 1, got 0"):
        check_count(0, "epochs")
    with pytest.raises(TypeError, match="epochs must be an int, got float"):
        check_count(2.0, "epochs")
