"""Tests of labkit.hardware.eie: EIE's weight sharing, relative-indexed CSC and PE array."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.hardware.eie import (
    CODEBOOK_SIZE,
    MAX_ZERO_RUN,
    conv_input_vectors,
    decode_eie,
    encode_eie,
    load_balance,
    relative_index_encode,
    share_weights,
    simulate_spmv,
    storage_bits,
    storage_table,
)

HAND_WEIGHT = torch.tensor(
    [
        [1.0, 0.0, 2.0],
        [0.0, 0.0, 3.0],
        [4.0, 0.0, 0.0],
        [0.0, 5.0, 6.0],
    ]
)


def pruned_weight(rows: int, columns: int, density: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(rows, columns, generator=generator) < density
    return torch.randn(rows, columns, generator=generator) * keep


def column_from_entries(codes: torch.Tensor, zero_runs: torch.Tensor, length: int) -> torch.Tensor:
    column = torch.zeros(length, dtype=torch.int64)
    rows = torch.cumsum(zero_runs.long() + 1, dim=0) - 1
    column[rows] = codes.long()
    return column


def test_relative_index_inserts_padding_after_15_zeros():
    column = torch.zeros(23, dtype=torch.int64)
    column[2], column[3], column[22] = 3, 5, 7
    codes, zero_runs = relative_index_encode(column)
    assert codes.tolist() == [3, 5, 0, 7]
    assert zero_runs.tolist() == [2, 0, 15, 2]


@pytest.mark.parametrize(
    ("run", "expected_runs"),
    [(15, [15]), (16, [15, 0]), (31, [15, 15]), (32, [15, 15, 0]), (40, [15, 15, 8])],
)
def test_padding_appears_exactly_when_a_run_exceeds_15(run, expected_runs):
    column = torch.zeros(run + 1, dtype=torch.int64)
    column[run] = 9
    codes, zero_runs = relative_index_encode(column)
    assert zero_runs.tolist() == expected_runs
    assert codes.tolist() == [0] * (len(expected_runs) - 1) + [9]


@settings(max_examples=60, deadline=None)
@given(
    codes=st.lists(
        st.integers(0, 15) | st.just(0) | st.just(0) | st.just(0), min_size=0, max_size=70
    )
)
def test_relative_index_round_trip_and_padding_count(codes):
    column = torch.tensor(codes, dtype=torch.int64)
    entry_codes, zero_runs = relative_index_encode(column)
    assert max(zero_runs.tolist(), default=0) <= MAX_ZERO_RUN
    rebuilt = column_from_entries(entry_codes, zero_runs, len(codes))
    assert torch.equal(rebuilt, column)
    nonzero_rows = [-1] + [row for row, code in enumerate(codes) if code]
    runs = [b - a - 1 for a, b in zip(nonzero_rows, nonzero_rows[1:], strict=False)]
    assert int((entry_codes == 0).sum()) == sum(run // (MAX_ZERO_RUN + 1) for run in runs)


def test_share_weights_keeps_zeros_and_at_most_16_values():
    weight = pruned_weight(30, 20, density=0.5, seed=0)
    codebook, codes = share_weights(weight, seed=0)
    assert len(codebook) == CODEBOOK_SIZE
    assert codebook[0] == 0
    assert torch.equal(codes == 0, weight == 0)
    assert torch.all(codebook[1:].diff() > 0)


def test_share_weights_is_exact_with_few_distinct_values():
    codebook, codes = share_weights(HAND_WEIGHT, seed=0)
    assert codebook.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert torch.equal(codebook[codes], HAND_WEIGHT)


def test_share_weights_depends_only_on_seed():
    weight = pruned_weight(40, 30, density=0.6, seed=1)
    first, second = share_weights(weight, seed=3), share_weights(weight, seed=3)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 70),
    columns=st.integers(1, 8),
    density=st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]),
    num_pes=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_decode_returns_the_weight_shared_matrix_exactly(rows, columns, density, num_pes, seed):
    weight = pruned_weight(rows, columns, density, seed)
    encoded = encode_eie(weight, num_pes, seed=seed)
    codebook, codes = share_weights(weight, seed=seed)
    assert torch.equal(decode_eie(encoded), codebook[codes])
    assert encoded.num_pes == num_pes
    for pe in encoded.pes:
        assert len(pe.column_pointers) == columns + 1
        assert max(pe.zero_runs.tolist(), default=0) <= MAX_ZERO_RUN


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 60),
    columns=st.integers(1, 10),
    num_pes=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_simulated_spmv_equals_dense_product(rows, columns, num_pes, seed):
    weight = pruned_weight(rows, columns, density=0.3, seed=seed)
    activations = torch.relu(torch.randn(columns, generator=torch.Generator().manual_seed(seed)))
    encoded = encode_eie(weight, num_pes, seed=seed)
    report = simulate_spmv(encoded, activations)
    assert torch.allclose(report.output, decode_eie(encoded) @ activations, atol=1e-5)
    assert report.broadcasts + report.skipped_activations == columns
    assert report.cycles >= int(report.work_per_pe.max())


def test_pe_assignment_interleaves_rows():
    encoded = encode_eie(HAND_WEIGHT, num_pes=2)
    assert encoded.pes[0].codes.tolist() == [1, 4, 2]
    assert encoded.pes[0].zero_runs.tolist() == [0, 0, 0]
    assert encoded.pes[0].column_pointers.tolist() == [0, 2, 2, 3]
    assert encoded.pes[1].codes.tolist() == [5, 3, 6]
    assert encoded.pes[1].zero_runs.tolist() == [1, 0, 0]
    assert encoded.pes[1].column_pointers.tolist() == [0, 0, 1, 3]


def test_simulator_counts_on_a_hand_computed_example():
    # PE 0 holds rows 0, 2; PE 1 rows 1, 3. x_1 = 0 is skipped.
    # Column 0: PE 0 has 2 entries, PE 1 none -> 2 cycles.
    # Column 2: PE 0 has 1 entry, PE 1 two   -> 2 cycles.
    report = simulate_spmv(encode_eie(HAND_WEIGHT, num_pes=2), torch.tensor([1.0, 0.0, 2.0]))
    assert report.output.tolist() == [5.0, 6.0, 4.0, 12.0]
    assert report.work_per_pe.tolist() == [3, 2]
    assert report.cycles == 4
    assert report.broadcasts == 2
    assert report.skipped_activations == 1
    assert report.load_balance_efficiency == pytest.approx(2.5 / 3)


def test_simulator_counts_padding_entries_as_work():
    weight = torch.zeros(40, 1)
    weight[0, 0], weight[39, 0] = 1.0, 2.0
    encoded = encode_eie(weight, num_pes=1)
    assert encoded.num_padding == 2
    report = simulate_spmv(encoded, torch.tensor([3.0]))
    assert report.cycles == 4
    assert report.output[39] == 6.0


def test_simulator_with_all_zero_activations_does_no_work():
    report = simulate_spmv(encode_eie(HAND_WEIGHT, num_pes=2), torch.zeros(3))
    assert report.cycles == 0
    assert report.work_per_pe.tolist() == [0, 0]
    assert report.load_balance_efficiency == 1.0


def test_storage_bits_on_a_hand_computed_example():
    bits = storage_bits(encode_eie(HAND_WEIGHT, num_pes=2))
    assert bits.dense == 12 * 32
    assert bits.csr == 6 * (32 + 32) + 5 * 32
    assert bits.eie == 6 * 8 + 2 * 4 * 16 + 7 * 32
    assert bits.eie_vs_dense == pytest.approx(384 / 400)
    assert bits.eie_vs_csr == pytest.approx(544 / 400)


def test_eie_beats_csr_on_a_large_sparse_layer():
    bits = storage_bits(encode_eie(pruned_weight(256, 128, density=0.1, seed=0), num_pes=8))
    assert bits.eie < bits.csr < bits.dense


@pytest.mark.parametrize(
    ("weight", "error", "match"),
    [
        ([[1.0, 0.0]], TypeError, "weight must be a torch.Tensor"),
        (torch.ones(3), ValueError, r"weight must be a non-empty 2-D.*\(3,\)"),
        (torch.ones(2, 3, 4), ValueError, "weight must be a non-empty 2-D"),
        (torch.ones(0, 3), ValueError, "weight must be a non-empty 2-D"),
        (torch.ones(2, 3, dtype=torch.int64), TypeError, "weight must be a floating-point"),
    ],
)
def test_bad_weight_is_rejected(weight, error, match):
    with pytest.raises(error, match=match):
        encode_eie(weight, num_pes=2)


@pytest.mark.parametrize(
    ("num_pes", "error"), [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_bad_number_of_pes_is_rejected(num_pes, error):
    with pytest.raises(error, match="num_pes"):
        encode_eie(HAND_WEIGHT, num_pes=num_pes)


@pytest.mark.parametrize(
    ("column", "error", "match"),
    [
        (torch.tensor([0.0, 1.0]), TypeError, "column_codes must be an integer"),
        (torch.zeros(2, 2, dtype=torch.int64), ValueError, "column_codes must be 1-D"),
        (torch.tensor([0, 16]), ValueError, r"column_codes must lie in \[0, 15\]"),
        (torch.tensor([-1, 0]), ValueError, r"column_codes must lie in \[0, 15\]"),
    ],
)
def test_bad_column_codes_are_rejected(column, error, match):
    with pytest.raises(error, match=match):
        relative_index_encode(column)


@pytest.mark.parametrize(
    ("activations", "error", "match"),
    [
        (torch.ones(4), ValueError, r"activations must have shape \(3,\)"),
        (torch.ones(3, 1), ValueError, r"activations must have shape \(3,\)"),
        (torch.ones(3, dtype=torch.int64), TypeError, "activations must have a floating-point"),
    ],
)
def test_bad_activations_are_rejected(activations, error, match):
    with pytest.raises(error, match=match):
        simulate_spmv(encode_eie(HAND_WEIGHT, num_pes=2), activations)


def test_storage_table_lists_dense_csr_and_eie_per_pe_count():
    encodings = {n: encode_eie(HAND_WEIGHT, num_pes=n) for n in (1, 2)}
    table = storage_table(encodings)
    assert list(table.index) == ["dense, 32-bit", "CSR, 32-bit", "EIE, 1 PE", "EIE, 2 PE"]
    assert table.index.name == "format"
    assert table.loc["EIE, 2 PE", "bits"] == 6 * 8 + 2 * 4 * 16 + 7 * 32
    assert table.loc["CSR, 32-bit", "vs dense"] == pytest.approx(384 / 544)
    assert table.loc["EIE, 2 PE", "pointer share"] == pytest.approx(2 * 4 * 16 / 400)
    assert table["entries"].isna().tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="at least one EIE matrix"):
        storage_table({})


def test_load_balance_sums_work_and_cycles_over_the_vectors():
    encoded = encode_eie(HAND_WEIGHT, num_pes=2)
    activations = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    table = load_balance({2: encoded}, activations)
    reports = [simulate_spmv(encoded, x) for x in activations]
    work = sum(report.work_per_pe for report in reports)
    assert table.loc[2, "work per PE"] == work.tolist()
    assert table.loc[2, "cycles"] == sum(report.cycles for report in reports)
    assert table.loc[2, "perfect balance"] == work.sum().item() / 2
    assert 0 < table.loc[2, "lock-step efficiency"] <= 1
    assert table.loc[2, "mean/max work"] == pytest.approx(work.double().mean() / work.max())


def test_conv_input_vectors_make_each_conv_output_pixel_a_matrix_product():
    from labkit.models import VGG

    torch.manual_seed(0)
    model = VGG((4, "M", 8), in_channels=1, num_classes=10).train()
    images = torch.randn(3, 1, 8, 8)
    inputs, vectors = conv_input_vectors(model, "backbone.conv1", images)
    conv = model.backbone.conv1
    assert inputs.shape == (3, 4, 4, 4) and vectors.shape == (3 * 16, 4 * 9)
    outputs = conv(inputs).flatten(2).transpose(1, 2).reshape(-1, 8)
    products = vectors @ conv.weight.flatten(1).T
    assert torch.allclose(products, outputs, atol=1e-5)
    assert model.training
    with pytest.raises(ValueError, match="layer must name an nn.Conv2d of the model, got "
                                         "'backbone.bn1'"):
        conv_input_vectors(model, "backbone.bn1", images)
    with pytest.raises(ValueError, match="images must be 4-D"):
        conv_input_vectors(model, "backbone.conv1", images[0])
