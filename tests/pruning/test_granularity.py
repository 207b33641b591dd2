import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune

from labkit.grading import checks
from labkit.pruning.granularity import (
    GRANULARITIES,
    channel_mask,
    fine_grained_mask,
    granularity_mask,
    kernel_mask,
    mask_from_scores,
    nm_mask,
    vector_mask,
)

SPARSITIES = st.floats(0.0, 0.99, allow_nan=False)
SHAPES = st.sampled_from([(7,), (3, 5), (4, 6), (6, 4, 3, 3), (8, 2, 1, 5), (2, 3, 4)])
SEEDS = st.integers(0, 2**16)
STRUCTURED = {"vector": vector_mask, "kernel": kernel_mask, "channel": channel_mask}


def random_weight(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, sparsity=SPARSITIES, seed=SEEDS)
def test_fine_grained_prunes_exactly_the_smallest_magnitudes(shape, sparsity, seed):
    weight = random_weight(shape, seed)
    mask = fine_grained_mask(weight, sparsity)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert (~mask).sum().item() == round(weight.numel() * sparsity)
    if mask.any() and (~mask).any():
        assert weight.abs()[mask].min() >= weight.abs()[~mask].max()


@settings(max_examples=40, deadline=None)
@given(shape=SHAPES, sparsity=SPARSITIES, seed=SEEDS)
def test_fine_grained_equals_torch_l1_unstructured_without_ties(shape, sparsity, seed):
    weight = random_weight(shape, seed)
    assert weight.abs().unique().numel() == weight.numel()
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(weight.clone())
    prune.l1_unstructured(module, "weight", amount=sparsity)
    assert torch.equal(fine_grained_mask(weight, sparsity), module.weight_mask.bool())


def test_ties_keep_the_first_elements_in_row_major_order():
    assert fine_grained_mask(torch.ones(4), 0.5).tolist() == [True, True, False, False]
    weight = torch.tensor([[2.0, -1.0, 1.0], [1.0, -2.0, 0.5]])
    assert fine_grained_mask(weight, 0.5).tolist() == [[True, True, False],
                                                       [False, True, False]]


def test_tied_mask_is_deterministic():
    weight = torch.tensor([1.0, -1.0] * 50)
    first = fine_grained_mask(weight, 0.3)
    assert (~first).sum().item() == 30
    assert torch.equal(first, fine_grained_mask(weight.clone(), 0.3))


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_sparsity_zero_keeps_everything(granularity):
    weight = random_weight((8, 4, 3, 3), 0)
    assert granularity_mask(weight, 0.0, granularity).all()


def test_rounding_follows_python_round():
    weight = torch.arange(1.0, 11.0)
    assert (~fine_grained_mask(weight, 0.25)).sum().item() == round(2.5) == 2
    assert (~fine_grained_mask(weight, 0.35)).sum().item() == round(3.5) == 4


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, math.nan])
@pytest.mark.parametrize("function", [fine_grained_mask, *STRUCTURED.values()])
def test_sparsity_outside_the_unit_interval_raises(function, sparsity):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        function(torch.ones(4, 4), sparsity)


@pytest.mark.parametrize("sparsity", ["0.5", True, None])
def test_sparsity_of_the_wrong_type_raises(sparsity):
    with pytest.raises(TypeError, match="sparsity must be a real number"):
        fine_grained_mask(torch.ones(4), sparsity)


def test_a_non_tensor_weight_raises():
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        fine_grained_mask([1.0, 2.0], 0.5)
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        mask_from_scores(None, 0.5)
    with pytest.raises(TypeError, match="weight must have a real .* got dtype torch.complex64"):
        fine_grained_mask(torch.ones(4, dtype=torch.complex64), 0.5)


nm_patterns = st.sampled_from([(2, 4), (1, 4), (3, 4), (0, 4), (4, 4), (2, 8), (1, 2)])


@settings(max_examples=60, deadline=None)
@given(pattern=nm_patterns, groups=st.integers(1, 3), out=st.integers(1, 4),
       kernel=st.sampled_from([None, (1, 1), (3, 3), (2, 3)]), seed=SEEDS)
def test_nm_mask_keeps_exactly_n_largest_in_every_group_of_m(pattern, groups, out, kernel,
                                                             seed):
    n, m = pattern
    shape = (out, groups * m) if kernel is None else (out, groups * m, *kernel)
    weight = random_weight(shape, seed)
    mask = nm_mask(weight, n, m)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    grouped_mask = mask.movedim(1, -1).reshape(-1, m)
    grouped_weight = weight.abs().movedim(1, -1).reshape(-1, m)
    assert (grouped_mask.sum(dim=1) == n).all()
    for keep, values in zip(grouped_mask, grouped_weight, strict=True):
        if 0 < n < m:
            assert values[keep].min() >= values[~keep].max()


def test_nm_mask_groups_conv_input_channels_at_one_kernel_position():
    weight = torch.zeros(1, 4, 2, 1)
    weight[0, :, 0, 0] = torch.tensor([1.0, 4.0, 3.0, 2.0])
    weight[0, :, 1, 0] = torch.tensor([5.0, -1.0, 0.0, -7.0])
    mask = nm_mask(weight, 2, 4)
    assert mask[0, :, 0, 0].tolist() == [False, True, True, False]
    assert mask[0, :, 1, 0].tolist() == [True, False, False, True]


def test_nm_mask_ties_keep_the_first_of_a_group():
    assert nm_mask(torch.ones(1, 4), 2, 4).tolist() == [[True, True, False, False]]


def test_nm_mask_with_m_not_dividing_the_input_dimension_raises():
    with pytest.raises(ValueError, match=r"m=4 must divide the input dimension .*=6"):
        nm_mask(torch.ones(2, 6), 2, 4)
    with pytest.raises(ValueError, match="m=4 must divide"):
        nm_mask(torch.ones(32, 1, 3, 3), 2, 4)


@pytest.mark.parametrize(("n", "m", "message"), [
    (5, 4, r"n must be in \[0, m\] = \[0, 4\], got n=5"),
    (-1, 4, r"n must be in \[0, m\]"),
    (1, 0, "m must be a positive int, got 0"),
])
def test_nm_mask_bad_n_or_m_raises(n, m, message):
    with pytest.raises(ValueError, match=message):
        nm_mask(torch.ones(2, 4), n, m)


def test_nm_mask_needs_ints_and_an_input_dimension():
    with pytest.raises(TypeError, match="n must be an int"):
        nm_mask(torch.ones(2, 4), 2.0, 4)
    with pytest.raises(ValueError, match="needs an input dimension"):
        nm_mask(torch.ones(8), 2, 4)


def group_view(mask_or_weight, granularity):
    """The tensor as (groups, elements per group) for a 4-D weight."""
    start = {"vector": 3, "kernel": 2, "channel": 1}[granularity]
    return mask_or_weight.flatten(start).reshape(-1, math.prod(mask_or_weight.shape[start:]))


@settings(max_examples=60, deadline=None)
@given(granularity=st.sampled_from(sorted(STRUCTURED)), sparsity=SPARSITIES, seed=SEEDS,
       shape=st.sampled_from([(6, 4, 3, 3), (5, 3, 2, 4), (4, 8, 1, 1)]))
def test_structured_masks_prune_whole_groups_of_smallest_norm(granularity, sparsity, seed,
                                                              shape):
    weight = random_weight(shape, seed)
    mask = STRUCTURED[granularity](weight, sparsity)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    groups = group_view(mask, granularity)
    assert (groups.all(dim=1) | ~groups.any(dim=1)).all()
    kept = groups[:, 0]
    assert (~kept).sum().item() == round(kept.numel() * sparsity)
    norms = group_view(weight, granularity).norm(dim=1)
    if kept.any() and (~kept).any():
        assert norms[kept].min() >= norms[~kept].max()


def test_linear_weight_is_a_conv_weight_with_a_1x1_kernel():
    weight = random_weight((6, 5), 1)
    assert torch.equal(kernel_mask(weight, 0.4), fine_grained_mask(weight, 0.4))
    assert torch.equal(vector_mask(weight, 0.4), fine_grained_mask(weight, 0.4))
    rows = channel_mask(weight, 0.5)
    assert rows.shape == (6, 5) and rows.all(dim=1).sum() == 3 and rows.any(dim=1).sum() == 3


def test_structured_masks_reject_unsupported_shapes():
    with pytest.raises(ValueError, match="channel pruning needs a weight with output channels"):
        channel_mask(torch.ones(5), 0.5)
    with pytest.raises(ValueError, match="vector pruning needs a 2-D linear or 4-D conv"):
        vector_mask(torch.ones(2, 3, 4), 0.5)
    with pytest.raises(ValueError, match="kernel pruning needs a 2-D linear or 4-D conv"):
        kernel_mask(torch.ones(5), 0.5)


def test_granularity_mask_dispatches_and_pattern_is_the_nearest_n_of_m():
    weight = random_weight((4, 8, 3, 3), 2)
    assert torch.equal(granularity_mask(weight, 0.5, "pattern"), nm_mask(weight, 2, 4))
    assert torch.equal(granularity_mask(weight, 0.3, "pattern", m=8), nm_mask(weight, 6, 8))
    assert torch.equal(granularity_mask(weight, 0.3, "kernel"), kernel_mask(weight, 0.3))
    with pytest.raises(ValueError, match="granularity must be one of"):
        granularity_mask(weight, 0.5, "block")
    with pytest.raises(ValueError, match="sparsity must be in"):
        granularity_mask(weight, 1.0, "pattern")


def test_masks_do_not_change_the_weight():
    weight = random_weight((4, 4, 3, 3), 3)
    before = weight.clone()
    for granularity in GRANULARITIES:
        granularity_mask(weight, 0.5, granularity)
    assert torch.equal(weight, before)


def test_lab_checks_pass_labkit_and_name_the_failing_case(capsys):
    checks.check_fine_grained_mask(fine_grained_mask)
    checks.check_nm_mask(nm_mask)
    lines = capsys.readouterr().out.splitlines()
    assert [re.fullmatch(r"(\w+): (\d+)/\2 cases passed", line).group(1) for line in lines] == \
        ["fine_grained_mask", "nm_mask"]

    def kthvalue_threshold(weight, sparsity):
        num_zeros = round(weight.numel() * sparsity)
        if num_zeros == 0:
            return torch.ones_like(weight, dtype=torch.bool)
        return weight.abs() > weight.abs().flatten().kthvalue(num_zeros).values

    with pytest.raises(checks.CheckFailed, match="case 'ties: four equal weights at 50%"):
        checks.check_fine_grained_mask(kthvalue_threshold)
    with pytest.raises(checks.CheckFailed, match=r"divide 6 input features' failed: "
                                                 r"expected ValueError raised.*, got tensor"):
        checks.check_nm_mask(lambda w, n, m: nm_mask(w, n, m) if w.shape[1] % m == 0
                             else torch.ones_like(w, dtype=torch.bool))


def stable_sort_mask(scores, sparsity):
    """The definition: a stable descending sort keeps its first ``numel - round(numel * s)``."""
    num_keep = scores.numel() - round(scores.numel() * sparsity)
    ranking = torch.sort(scores.flatten(), descending=True, stable=True).indices
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[ranking[:num_keep]] = True
    return keep.reshape(scores.shape)


@settings(max_examples=80, deadline=None)
@given(shape=SHAPES, sparsity=SPARSITIES, seed=SEEDS, levels=st.sampled_from([1, 2, 3, 8, 0]))
def test_selection_equals_the_stable_sort_also_with_many_ties(shape, sparsity, seed, levels):
    scores = random_weight(shape, seed).abs()
    if levels:
        scores = torch.round(scores * levels)
    assert torch.equal(mask_from_scores(scores, sparsity), stable_sort_mask(scores, sparsity))


def test_integer_and_empty_scores():
    scores = torch.tensor([3, 1, 1, 2, 1])
    assert mask_from_scores(scores, 0.6).tolist() == [True, False, False, True, False]
    assert mask_from_scores(scores, 0.4).tolist() == [True, True, False, True, False]
    assert mask_from_scores(torch.ones(0), 0.5).shape == (0,)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_infinite_scores_raise_instead_of_ranking_them(bad):
    weight = torch.tensor([[1.0, 2.0], [bad, 3.0]])
    with pytest.raises(ValueError, match=r"weight must be finite: it holds 1 .*index \(1, 0\)"):
        fine_grained_mask(weight, 0.5)
    with pytest.raises(ValueError, match="scores must be finite"):
        mask_from_scores(weight, 0.5)


@pytest.mark.parametrize(("sparsity", "kept"), [(0.6, 2), (0.7, 1), (0.875, 1), (0.9, 1),
                                                (0.99, 1)])
def test_pattern_at_high_sparsity_keeps_one_in_every_group(sparsity, kept):
    weight = random_weight((4, 8, 3, 3), 5)
    mask = granularity_mask(weight, sparsity, "pattern")
    assert (mask.movedim(1, -1).reshape(-1, 4).sum(dim=1) == kept).all()
