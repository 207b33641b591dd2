"""Tests of labkit.hardware.nm: 2:4 pruning, compression, metadata and matmul."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from labkit.hardware import nm
from labkit.hardware.nm import (
    SEMI_STRUCTURED_SKIPPED,
    Compressed24,
    SemiStructuredTiming,
    compress_2_4,
    decompress_2_4,
    mask_2_4,
    matmul_2_4,
    pack_positions,
    pad_to_semi_structured,
    prune_2_4,
    semi_structured_layers,
    semi_structured_linear_benchmark,
    semi_structured_shapes,
    semi_structured_unavailable_reason,
    unpack_positions,
)

NO_SPARSE_TENSOR_CORES = semi_structured_unavailable_reason() is not None


def random_weight(rows: int, columns: int, seed: int, zero_fraction: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(rows, columns, generator=generator) >= zero_fraction
    return torch.randn(rows, columns, generator=generator) * keep


def test_mask_keeps_two_largest_magnitudes_lowest_index_on_ties():
    weight = torch.tensor([[1.0, -3.0, 3.0, 0.5, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    expected = [[0, 1, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0]]
    assert mask_2_4(weight).int().tolist() == expected


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), groups=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_prune_keeps_the_largest_two_of_every_four(rows, groups, seed):
    weight = random_weight(rows, 4 * groups, seed, zero_fraction=0.2)
    pruned = prune_2_4(weight).reshape(rows, groups, 4)
    magnitudes = weight.abs().reshape(rows, groups, 4)
    kept = pruned != 0
    assert int(kept.sum(dim=-1).max()) <= 2
    smallest_kept = torch.where(kept, magnitudes, torch.inf).amin(dim=-1)
    largest_dropped = torch.where(kept, -torch.inf, magnitudes).amax(dim=-1)
    assert torch.all(smallest_kept >= largest_dropped)
    assert torch.equal(pruned[kept], weight.reshape(rows, groups, 4)[kept])


def test_compress_layout_on_a_hand_made_row():
    weight = torch.tensor([[0.0, 5.0, 0.0, 7.0, 9.0, 0.0, 0.0, 8.0]])
    compressed = compress_2_4(weight)
    assert compressed.values.tolist() == [[5.0, 7.0, 9.0, 8.0]]
    # positions 1, 3, 0, 3 -> 1 | 3 << 2 | 0 << 4 | 3 << 6 = 205
    assert compressed.metadata.dtype == torch.uint8
    assert compressed.metadata.tolist() == [[205]]
    assert compressed.shape == (1, 8)


def test_compress_a_group_with_one_nonzero_keeps_a_zero():
    compressed = compress_2_4(torch.tensor([[0.0, 0.0, 4.0, 0.0]]))
    assert compressed.values.tolist() == [[0.0, 4.0]]
    assert compressed.metadata.tolist() == [[0 | 2 << 2]]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 10),
    groups=st.integers(1, 9),
    zero_fraction=st.sampled_from([0.0, 0.3, 0.8, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_compress_decompress_round_trip_is_exact(rows, groups, zero_fraction, seed):
    weight = prune_2_4(random_weight(rows, 4 * groups, seed, zero_fraction))
    compressed = compress_2_4(weight)
    assert compressed.values.shape == (rows, 2 * groups)
    assert compressed.metadata.shape == (rows, (2 * groups + 3) // 4)
    assert torch.equal(decompress_2_4(compressed), weight)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 10),
    groups=st.integers(1, 8),
    batch=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_matmul_from_compressed_equals_dense_masked_matmul(rows, groups, batch, seed):
    weight = random_weight(rows, 4 * groups, seed)
    x = torch.randn(batch, 4 * groups, generator=torch.Generator().manual_seed(seed + 1))
    expected = x @ prune_2_4(weight).T
    assert torch.allclose(matmul_2_4(x, compress_2_4(prune_2_4(weight))), expected, atol=1e-5)


def test_matmul_is_exact_on_small_integers_with_batch_dimensions():
    weight = prune_2_4(torch.arange(-12.0, 12.0).reshape(3, 8))
    x = torch.arange(48.0).reshape(2, 3, 8) % 5
    assert torch.equal(matmul_2_4(x, compress_2_4(weight)), x @ weight.T)


def test_pack_and_unpack_positions_are_inverse():
    positions = torch.tensor([[0, 1, 2, 3, 3, 2], [1, 1, 0, 0, 2, 2]])
    metadata = pack_positions(positions)
    assert metadata.shape == (2, 2)
    assert torch.equal(unpack_positions(metadata, 6), positions)
    assert metadata[:, 1].tolist() == [3 | 2 << 2, 2 | 2 << 2]


def test_compress_rejects_a_matrix_that_is_not_2_4():
    weight = torch.tensor([[1.0, 2.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0]])
    with pytest.raises(ValueError, match=r"weight is not 2:4 sparse: row 0, columns 4..7 hold 3"):
        compress_2_4(weight)


@pytest.mark.parametrize("function", [mask_2_4, prune_2_4, compress_2_4])
@pytest.mark.parametrize(
    ("weight", "error", "match"),
    [
        ([[1.0, 0.0, 0.0, 0.0]], TypeError, "weight must be a torch.Tensor"),
        (torch.ones(8), ValueError, r"weight must be 2-D.*\(8,\)"),
        (torch.ones(2, 2, 4), ValueError, "weight must be 2-D"),
        (torch.ones(2, 6), ValueError, r"columns divisible by 4.*\(2, 6\)"),
        (torch.ones(2, 0), ValueError, "columns divisible by 4"),
    ],
)
def test_bad_weight_is_rejected(function, weight, error, match):
    with pytest.raises(error, match=match):
        function(weight)


def test_matmul_rejects_x_of_the_wrong_width():
    compressed = compress_2_4(prune_2_4(torch.ones(2, 8)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 8\).*\(3, 4\)"):
        matmul_2_4(torch.ones(3, 4), compressed)


@pytest.mark.parametrize(
    ("positions", "error", "match"),
    [
        (torch.tensor([[0.0, 1.0]]), TypeError, "positions must be an integer"),
        (torch.tensor([0, 1]), ValueError, "positions must be 2-D"),
        (torch.tensor([[0, 4]]), ValueError, r"positions must lie in \[0, 3\]"),
    ],
)
def test_bad_positions_are_rejected(positions, error, match):
    with pytest.raises(error, match=match):
        pack_positions(positions)


@pytest.mark.parametrize(
    ("metadata", "count", "error", "match"),
    [
        (torch.zeros(1, 2, dtype=torch.int64), 4, TypeError, "metadata must be a uint8"),
        (torch.zeros(2, dtype=torch.uint8), 4, ValueError, "metadata must be 2-D"),
        (torch.zeros(1, 2, dtype=torch.uint8), 9, ValueError, r"count must be in \[0, 8\]"),
    ],
)
def test_bad_metadata_is_rejected(metadata, count, error, match):
    with pytest.raises(error, match=match):
        unpack_positions(metadata, count)


def test_decompress_is_the_inverse_of_a_hand_built_compressed_matrix():
    compressed = Compressed24(
        values=torch.tensor([[1.0, 2.0]]),
        metadata=torch.tensor([[2 | 3 << 2]]).byte(),
        shape=(1, 4),
    )
    assert decompress_2_4(compressed).tolist() == [[0.0, 0.0, 1.0, 2.0]]


@pytest.mark.skipif(not NO_SPARSE_TENSOR_CORES, reason="this machine has sparse Tensor Cores")
def test_semi_structured_benchmark_is_skipped_without_sm80():
    assert semi_structured_unavailable_reason().startswith(SEMI_STRUCTURED_SKIPPED)
    with pytest.raises(RuntimeError, match=r"^skipped: needs CUDA sm80\+"):
        semi_structured_linear_benchmark(torch.randn(32, 64))


@pytest.mark.skipif(NO_SPARSE_TENSOR_CORES, reason="needs CUDA sm80+")
def test_semi_structured_benchmark_matches_dense_on_gpu():
    timing = semi_structured_linear_benchmark(
        torch.randn(256, 512), batch_size=256, min_run_time=0.1
    )
    assert timing.shape == (256, 256, 512)
    assert timing.dense_seconds > 0 and timing.sparse_seconds > 0
    assert timing.speedup == pytest.approx(timing.dense_seconds / timing.sparse_seconds)


@pytest.mark.parametrize(
    ("weight", "keywords", "match"),
    [
        (torch.randn(16, 64), {}, r"multiple of \(32, 64\).*\(16, 64\)"),
        (torch.randn(32, 32), {}, r"multiple of \(32, 64\).*\(32, 32\)"),
        (torch.randn(32, 64), {"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
        (torch.randn(32, 64), {"min_run_time": 0.0}, r"min_run_time must be a finite .* \(0"),
        (torch.randn(32, 64), {"min_run_time": float("nan")}, "min_run_time must be a finite"),
        (torch.randn(32, 64), {"min_run_time": float("inf")}, "min_run_time must be a finite"),
    ],
)
def test_semi_structured_benchmark_rejects_bad_arguments(weight, keywords, match):
    with pytest.raises(ValueError, match=match):
        semi_structured_linear_benchmark(weight, **keywords)


@given(rows=st.integers(1, 70), columns=st.integers(1, 130))
def test_padding_to_the_fp16_tiles_appends_zeros_only(rows, columns):
    weight = torch.randn(rows, columns)
    padded = pad_to_semi_structured(weight)
    assert padded.shape[0] % 32 == 0 and padded.shape[1] % 64 == 0
    assert padded.shape[0] - rows < 32 and padded.shape[1] - columns < 64
    assert torch.equal(padded[:rows, :columns], weight)
    assert not padded[rows:].any() and not padded[:, columns:].any()


def test_semi_structured_layers_time_each_padded_layer(monkeypatch):
    seen = []

    def benchmark(weight, batch_size, **options):
        seen.append((tuple(weight.shape), batch_size, options))
        return SemiStructuredTiming((batch_size, *weight.shape), 4e-6, 1e-6, 0.0)

    monkeypatch.setattr(nm, "semi_structured_linear_benchmark", benchmark)
    model = nn.Sequential(nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 8))
    table = semi_structured_layers(model, ["0", "2"], 512, min_run_time=0.1)
    assert seen == [((64, 64), 512, {"min_run_time": 0.1}),
                    ((32, 64), 512, {"min_run_time": 0.1})]
    assert table.index.name == "layer" and list(table.index) == ["0", "2"]
    assert table["out x in"].tolist() == ["40 x 64", "8 x 40"]
    assert table["dense (µs)"].tolist() == pytest.approx([4.0, 4.0])
    assert table["2:4 (µs)"].tolist() == pytest.approx([1.0, 1.0])
    assert table["speed-up"].tolist() == pytest.approx([4.0, 4.0])
    assert table["max difference"].tolist() == [0.0, 0.0]
    for name in ("1", "missing"):
        with pytest.raises(ValueError, match=f"layers must name nn.Linear layers of the "
                                             f"model, got '{name}'"):
            semi_structured_layers(model, [name], 512)
    with pytest.raises(TypeError, match="layers must be a list of names"):
        semi_structured_layers(model, "0", 512)


def test_semi_structured_shapes_time_a_seeded_random_weight_per_shape(monkeypatch):
    seen = []

    def benchmark(weight, batch_size, **options):
        seen.append((weight, batch_size))
        return SemiStructuredTiming((batch_size, *weight.shape), 3e-6, 2e-6, 1e-3)

    monkeypatch.setattr(nm, "semi_structured_linear_benchmark", benchmark)
    table = semi_structured_shapes([(64, 128, 32), (32, 64, 8)], seed=3)
    assert list(table.index) == ["128 -> 64", "64 -> 32"] and table.index.name == "in -> out"
    assert table["batch"].tolist() == [32, 8]
    assert [tuple(weight.shape) for weight, _ in seen] == [(64, 128), (32, 64)]
    expected = torch.randn(64, 128, generator=torch.Generator().manual_seed(3))
    assert torch.equal(seen[0][0], expected)
    assert table["speed-up"].tolist() == pytest.approx([1.5, 1.5])
    assert table["max difference"].tolist() == [1e-3, 1e-3]
    with pytest.raises(ValueError, match=r"shapes must hold .* triples, got \(64, 128\)"):
        semi_structured_shapes([(64, 128)])
    with pytest.raises(ValueError, match="shapes must be an int >= 1, got 0"):
        semi_structured_shapes([(64, 128, 0)])


@pytest.mark.skipif(not NO_SPARSE_TENSOR_CORES, reason="this machine has sparse Tensor Cores")
def test_semi_structured_shapes_say_why_they_are_skipped():
    with pytest.raises(RuntimeError, match=r"^skipped: needs CUDA sm80\+"):
        semi_structured_shapes([(64, 128, 32)])
