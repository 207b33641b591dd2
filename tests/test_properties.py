"""Properties of the mask, importance, schedule, hardware-format and measurement functions
over random input (hypothesis): each states what a correct answer is, or that a clear
error is raised."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import measure
from labkit.hardware import eie, nm
from labkit.pruning import criteria, schedule
from labkit.pruning.granularity import (
    channel_mask,
    fine_grained_mask,
    kernel_mask,
    mask_from_scores,
    nm_mask,
    vector_mask,
)
from labkit.validation import check_real, check_seed

settings.register_profile("labkit", max_examples=50, deadline=None)
settings.load_profile("labkit")

DTYPES = (torch.float16, torch.float32, torch.float64)
JUST_BELOW_ONE = math.nextafter(1.0, 0.0)

sparsities = st.one_of(st.sampled_from([0.0, 0.5, 0.999, JUST_BELOW_ONE]),
                       st.floats(0.0, 1.0, exclude_max=True))
shapes = st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
FLOAT_DTYPES = st.sampled_from(DTYPES)
BOOLEANS = st.booleans()


@st.composite
def tensors(draw, shape=shapes, dtype=FLOAT_DTYPES, ties=BOOLEANS, transposed=BOOLEANS):
    """A random tensor: any shape (empty and one-element included), a float dtype, maybe
    with many equal values, maybe a non-contiguous view."""
    size = draw(shape)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    values = torch.randn(size, generator=generator, dtype=torch.float64)
    if draw(ties):
        values = values.round()
    values = values.to(draw(dtype))
    if draw(transposed) and values.dim() >= 2:
        values = values.transpose(0, -1).contiguous().transpose(0, -1)
    return values


def pruned_count(count: int, sparsity: float) -> int:
    return round(count * sparsity)


# Masks.

@given(tensors(), sparsities)
def test_mask_prunes_exactly_round_count_times_sparsity(scores, sparsity):
    mask = mask_from_scores(scores, sparsity)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert int((~mask).sum()) == pruned_count(scores.numel(), sparsity)


@given(tensors(), sparsities)
def test_fine_grained_mask_keeps_the_largest_magnitudes(weight, sparsity):
    mask = fine_grained_mask(weight, sparsity)
    assert int((~mask).sum()) == pruned_count(weight.numel(), sparsity)
    if mask.any() and (~mask).any():
        assert weight.abs()[mask].min() >= weight.abs()[~mask].max()


@given(tensors(transposed=st.just(False)), sparsities)
def test_masks_of_a_non_contiguous_view_equal_those_of_its_copy(weight, sparsity):
    if weight.dim() >= 2:
        view = weight.transpose(0, 1)
        assert torch.equal(fine_grained_mask(view, sparsity),
                           fine_grained_mask(view.contiguous(), sparsity))


@given(tensors(), sparsities, sparsities)
def test_fine_grained_masks_nest(weight, first, second):
    low, high = sorted((first, second))
    denser, sparser = fine_grained_mask(weight, low), fine_grained_mask(weight, high)
    assert not (sparser & ~denser).any()


@given(tensors(shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
                               st.integers(1, 3))), sparsities)
def test_group_masks_prune_whole_groups_in_exact_counts(weight, sparsity):
    out, inp, rows, _ = weight.shape
    for mask_of, groups, group_dims in ((channel_mask, out, (1, 2, 3)),
                                        (kernel_mask, out * inp, (2, 3)),
                                        (vector_mask, out * inp * rows, (3,))):
        mask = mask_of(weight, sparsity)
        kept_groups = mask.all(dim=group_dims)
        assert torch.equal(kept_groups, mask.any(dim=group_dims))
        assert int((~kept_groups).sum()) == pruned_count(groups, sparsity)


@given(tensors(shape=st.tuples(st.integers(1, 4), st.sampled_from([4, 8]), st.integers(1, 3),
                               st.integers(1, 3))), st.integers(0, 4))
def test_nm_mask_keeps_n_of_every_group_of_m(weight, n):
    mask = nm_mask(weight, n, 4)
    groups = mask.movedim(1, -1).reshape(-1, 4)
    assert (groups.sum(dim=1) == n).all()


@given(tensors(shape=nonempty_shapes), st.sampled_from([math.nan, math.inf, -math.inf]),
       st.data())
def test_nan_and_inf_are_refused_by_masks_and_importance(weight, bad, data):
    index = tuple(data.draw(st.integers(0, size - 1)) for size in weight.shape)
    weight = weight.clone()
    weight[index] = bad
    for call in (lambda w: fine_grained_mask(w, 0.5), criteria.magnitude,
                 lambda w: criteria.obd_importance(w, torch.ones_like(w))):
        with pytest.raises(ValueError, match=r"must be finite"):
            call(weight)


# Importance.

@given(tensors(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
               dtype=st.sampled_from((torch.float32, torch.float64, torch.int64))))
def test_row_norms_are_the_norms_of_the_rows(weight):
    assert torch.allclose(criteria.row_norm(weight, p=1),
                          weight.double().abs().flatten(1).sum(dim=1).to(
                              criteria.row_norm(weight, p=1).dtype), rtol=1e-3)
    assert (criteria.row_norm(weight, p=math.inf) >= 0).all()


@given(tensors(), st.integers(0, 2**32 - 1))
def test_random_importance_has_the_weights_shape_and_repeats(weight, seed):
    a = criteria.random_importance(weight, seed=seed)
    assert a.shape == weight.shape and torch.equal(a, criteria.random_importance(weight,
                                                                                 seed=seed))


# Schedules.

@given(st.integers(1, 50), sparsities, sparsities)
def test_agp_rises_monotonically_from_initial_to_final(n, first, second):
    s_initial, s_final = sorted((first, second))
    values = [schedule.agp_sparsity(t, n, s_initial, s_final) for t in range(n + 1)]
    assert values[0] == pytest.approx(s_initial) and values[-1] == s_final
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:], strict=False))


@given(st.floats(0.0, 0.95))
def test_layer_sparsities_give_the_model_its_overall_sparsity(sparsity):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    reachable = 128 / (128 + 64)
    if sparsity >= reachable:
        with pytest.raises(ValueError, match="out of reach with dense_layers"):
            schedule.layer_sparsities(model, sparsity, ["1"])
        return
    per_layer = schedule.layer_sparsities(model, sparsity, ["1"])
    assert list(per_layer) == ["0"]
    assert per_layer["0"] * reachable == pytest.approx(sparsity)


# Hardware formats: round trips are exact.

@given(tensors(shape=st.tuples(st.integers(1, 6), st.integers(1, 4).map(lambda g: 4 * g)),
               dtype=st.sampled_from((torch.float32, torch.float64))))
def test_2_4_compression_round_trips_exactly(weight):
    pruned = nm.prune_2_4(weight)
    assert torch.equal(nm.decompress_2_4(nm.compress_2_4(pruned)), pruned)
    x = torch.randn(3, weight.shape[1], dtype=weight.dtype)
    assert torch.allclose(nm.matmul_2_4(x, nm.compress_2_4(pruned)), x @ pruned.T, atol=1e-5)


@given(st.integers(1, 5), st.integers(0, 12), st.integers(0, 2**16))
def test_position_packing_round_trips(rows, count, seed):
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, 4, (rows, count), generator=generator)
    packed = nm.pack_positions(positions)
    assert packed.shape == (rows, math.ceil(count / 4))
    assert torch.equal(nm.unpack_positions(packed, count), positions)


@given(tensors(shape=st.tuples(st.integers(1, 8), st.integers(1, 8)),
               dtype=st.just(torch.float32), transposed=st.booleans()),
       st.floats(0.0, 0.95), st.integers(1, 4))
@settings(max_examples=25)
def test_eie_decodes_to_the_weight_shared_matrix(weight, sparsity, num_pes):
    weight = weight * fine_grained_mask(weight, sparsity)
    codebook, codes = eie.share_weights(weight)
    encoded = eie.encode_eie(weight, num_pes)
    assert torch.equal(eie.decode_eie(encoded), codebook[codes])
    assert torch.equal(eie.decode_eie(encoded) == 0, weight == 0)


@given(st.lists(st.integers(0, 15), max_size=60))
def test_relative_index_entries_replay_the_column(column):
    codes = torch.tensor(column, dtype=torch.int64)
    values, runs = eie.relative_index_encode(codes)
    replayed, position = torch.zeros(len(column), dtype=torch.int64), -1
    for value, run in zip(values.tolist(), runs.tolist(), strict=True):
        position += run + 1
        replayed[position] = value
    assert torch.equal(replayed, codes) and (runs <= 15).all()


# Measurement.

@given(tensors(dtype=st.sampled_from(DTYPES + (torch.int64, torch.bool))))
def test_sparsity_is_the_fraction_of_zeros(tensor):
    expected = 0.0 if tensor.numel() == 0 else float((tensor == 0).sum()) / tensor.numel()
    assert measure.get_sparsity(tensor) == pytest.approx(expected)


@given(tensors(), st.integers(1, 64), st.integers(1, 64))
def test_tensor_sizes_follow_their_formulas(tensor, data_width, index_width):
    nnz, numel = int(tensor.count_nonzero()), tensor.numel()
    rows = tensor.shape[0] if tensor.dim() else 1
    assert measure.tensor_size_bits(tensor, data_width) == numel * data_width
    assert measure.tensor_size_bits(tensor, data_width, "bitmask") == numel + nnz * data_width
    assert measure.tensor_size_bits(tensor, data_width, "csr", index_width) == \
        nnz * (data_width + index_width) + (rows + 1) * index_width


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(1, 3),
       st.sampled_from([torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d]))
def test_macs_of_linear_and_convs_follow_their_formulas(batch, fan_in, fan_out, size, conv):
    linear = torch.nn.Linear(fan_in, fan_out)
    assert measure.count_macs(linear, torch.randn(batch, fan_in)) == batch * fan_in * fan_out
    dims = {torch.nn.Conv1d: 1, torch.nn.Conv2d: 2, torch.nn.Conv3d: 3}[conv]
    layer = conv(fan_in, fan_out, 1, bias=False)
    inputs = torch.randn(batch, fan_in, *[size] * dims)
    expected = batch * fan_in * fan_out * size**dims
    assert measure.count_macs(layer, inputs) == expected
    assert measure.macs_per_layer(torch.nn.Sequential(layer), inputs) == {"0": expected}


# Validation.

@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                 st.booleans(), st.none(), st.text(max_size=2)))
def test_check_real_accepts_exactly_the_finite_real_numbers(value):
    finite_real = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if finite_real:
        assert check_real(value, "x") == float(value)
    else:
        with pytest.raises((TypeError, ValueError), match="^x must be"):
            check_real(value, "x")


@given(st.one_of(st.integers(-2, 2**33), st.none(), st.floats(), st.booleans()))
def test_check_seed_accepts_exactly_the_seeds_every_generator_takes(value):
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32
    if valid:
        assert check_seed(value) == value
    else:
        with pytest.raises((TypeError, ValueError), match="^seed must be an int"):
            check_seed(value)
