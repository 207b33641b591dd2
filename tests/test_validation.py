import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit import validation
from labkit.validation import check_count, check_sparsities, check_sparsity


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


def test_real_numbers_with_open_and_closed_ends():
    assert validation.check_real(np.float32(0.5), "x", 0.0, 1.0) == 0.5
    assert validation.check_real(1, "x", 0.0, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"x must be a finite number in \(0, 1\], got 0"):
        validation.check_real(0, "x", 0.0, 1.0, low_open=True)
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="x must be a finite number"):
            validation.check_real(value, "x")
    with pytest.raises(TypeError, match="x must be a real number, got str '1'"):
        validation.check_real("1", "x")


def test_counts_with_an_upper_bound_and_numpy_ints():
    assert validation.check_count(np.int64(3), "n", 1, 3) == 3
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 3\], got 4"):
        validation.check_count(4, "n", 1, 3)


def test_seeds():
    assert validation.check_seed(np.int64(7)) == 7
    with pytest.raises(TypeError, match="seed must be an int .* got None"):
        validation.check_seed(None)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 4294967295\]"):
        validation.check_seed(-1)


def test_tensor_kinds_and_finiteness():
    validation.check_tensor(torch.ones(2, dtype=torch.int8), "w")
    validation.check_tensor(torch.ones(2, dtype=torch.bool), "w", kind="any")
    with pytest.raises(TypeError, match="w must have a real"):
        validation.check_tensor(torch.ones(2, dtype=torch.bool), "w")
    with pytest.raises(TypeError, match="w must have a floating-point dtype"):
        validation.check_tensor(torch.ones(2, dtype=torch.int64), "w", kind="floating")
    with pytest.raises(TypeError, match="w must have an integer dtype"):
        validation.check_tensor(torch.ones(2), "w", kind="integer")
    with pytest.raises(ValueError, match=r"w must be finite: it holds 2 NaN or infinite "
                                         r"entries, the first at index \(0, 1\)"):
        validation.check_tensor(torch.tensor([[0.0, math.inf], [math.nan, 1.0]]), "w")
    validation.check_tensor(torch.tensor([math.nan]), "w", finite=False)
    with pytest.raises(ValueError, match="w must be 2-D"):
        validation.check_tensor(torch.ones(3), "w", ndim=2)
    with pytest.raises(ValueError, match="kind must be one of"):
        validation.check_tensor(torch.ones(3), "w", kind="complex")


def test_choices_do_not_confuse_true_with_one():
    validation.check_choice(None, "index", (None, "csr"))
    with pytest.raises(ValueError, match="index must be one of"):
        validation.check_choice(True, "index", (1, "csr"))


def test_batches_name_an_empty_loader_at_its_end():
    assert list(validation.batches([1, 2], "loader")) == [1, 2]
    with pytest.raises(ValueError, match="^train_loader is empty"):
        list(validation.batches(iter([]), "train_loader"))
    with pytest.raises(TypeError, match="loader must be a DataLoader"):
        list(validation.batches(torch.ones(3), "loader"))


def test_names_and_indices():
    assert validation.check_names(["a", "b"], "layers") == ("a", "b")
    with pytest.raises(TypeError, match="layers must hold names"):
        validation.check_names([1], "layers")
    assert validation.check_indices([2, np.int64(0)], "keep", 3).tolist() == [2, 0]
    assert validation.check_indices(torch.tensor([1], dtype=torch.int32), "keep", 2).dtype \
        == torch.long
    with pytest.raises(ValueError, match="keep must not repeat an index"):
        validation.check_indices([1, 1], "keep", 3)
    with pytest.raises(ValueError, match=r"keep must lie in \[0, 2\]"):
        validation.check_indices([3], "keep", 3)
    with pytest.raises(TypeError, match="keep must hold ints, got float"):
        validation.check_indices([1.0], "keep", 3)


def test_weight_layers_and_layer_types():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Embedding(3, 2),
                          nn.MultiheadAttention(2, 1))
    assert list(validation.weight_layers(model)) == ["0", "2", "3", "3.out_proj"]
    validation.check_layer_types(model, (nn.Linear,), (nn.Embedding, nn.MultiheadAttention))
    with pytest.raises(TypeError, match=r"model has a layer '3' of type MultiheadAttention"):
        validation.check_layer_types(model, (nn.Linear,), (nn.Embedding,))


def test_a_model_without_parameters_has_no_device():
    assert validation.parameter_device(nn.Linear(1, 1)) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"net \(ReLU\) has no parameters"):
        validation.parameter_device(nn.ReLU(), "net")
    with pytest.raises(TypeError, match="net must be a torch.nn.Module, got str"):
        validation.parameter_device("model", "net")


def test_check_sparsities_takes_a_non_empty_list_and_asks_for_increase_when_told():
    check_sparsities([0.5, 0.2])
    check_sparsities((0.2, 0.5), increasing=True)
    with pytest.raises(TypeError, match="sparsities must be a list of sparsities, got str"):
        check_sparsities("0.5")
    with pytest.raises(ValueError, match="steps must hold at least one sparsity"):
        check_sparsities([], "steps")
    with pytest.raises(ValueError, match=r"sparsities must be in \[0, 1\), got 1.0"):
        check_sparsities([0.5, 1.0])
    with pytest.raises(ValueError, match="strictly increasing, got 0.5 then 0.5"):
        check_sparsities([0.2, 0.5, 0.5], increasing=True)
