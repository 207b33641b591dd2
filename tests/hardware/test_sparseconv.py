"""Tests of labkit.hardware.sparseconv: point clouds, voxels, kernel maps, sparse conv3d."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from labkit.hardware import sparseconv
from labkit.hardware.sparseconv import (
    SHAPES,
    TORUS_MAJOR_RADIUS,
    TORUS_MINOR_RADIUS,
    build_kernel_map,
    conv_macs,
    gather_active_sites,
    kernel_offsets,
    sparse_conv3d,
    sparse_conv_transpose3d,
    strided_coords,
    synthetic_point_cloud,
    to_dense_grid,
    voxelize,
)

TWO_VOXELS = torch.tensor([[0, 0, 0], [1, 0, 0]])


def random_weight(out_channels, in_channels, kernel_size, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    shape = (out_channels, in_channels, kernel_size, kernel_size, kernel_size)
    return torch.randn(shape, generator=generator, dtype=dtype)


def dense_conv_at_active_sites(coords, feats, weight):
    grid = to_dense_grid(coords, feats)
    return gather_active_sites(F.conv3d(grid, weight, padding=weight.shape[-1] // 2), coords)


def brute_force_pairs(coords, offset):
    index = {tuple(c): i for i, c in enumerate(coords.tolist())}
    shifted = [tuple(c + d for c, d in zip(row, offset, strict=True)) for row in coords.tolist()]
    return sorted((index[s], o) for o, s in enumerate(shifted) if s in index)


@pytest.mark.parametrize("shape", SHAPES)
def test_point_cloud_is_seeded(shape):
    first = synthetic_point_cloud(shape, 200, noise=0.01, seed=4)
    assert first.shape == (200, 3) and first.dtype == torch.float32
    assert torch.equal(first, synthetic_point_cloud(shape, 200, noise=0.01, seed=4))
    assert not torch.equal(first, synthetic_point_cloud(shape, 200, noise=0.01, seed=5))


def test_noise_free_points_lie_on_their_surfaces():
    sphere = synthetic_point_cloud("sphere", 500, seed=0)
    assert torch.allclose(sphere.norm(dim=1), torch.ones(500), atol=1e-5)
    box = synthetic_point_cloud("box", 500, seed=0)
    assert torch.allclose(box.abs().amax(dim=1), torch.ones(500))
    assert box.abs().max() <= 1.0
    torus = synthetic_point_cloud("torus", 500, seed=0)
    ring_distance = torus[:, :2].norm(dim=1) - TORUS_MAJOR_RADIUS
    tube = ring_distance**2 + torus[:, 2] ** 2
    assert torch.allclose(tube, torch.full((500,), TORUS_MINOR_RADIUS**2), atol=1e-5)


def test_voxelize_averages_points_of_a_voxel():
    points = torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.2, 0.4], [-0.2, 0.1, 0.9], [1.2, 0.0, 0.0]])
    coords, feats = voxelize(points, voxel_size=0.5)
    assert coords.tolist() == [[-1, 0, 1], [0, 0, 0], [2, 0, 0]]
    assert torch.allclose(feats[1], torch.tensor([0.2, 0.15, 0.25]))
    assert torch.allclose(feats[0], points[2])


def test_voxelize_averages_given_features():
    points = torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2]])
    coords, feats = voxelize(points, 1.0, features=torch.tensor([[2.0], [4.0]]))
    assert coords.tolist() == [[0, 0, 0]]
    assert feats.tolist() == [[3.0]]


def test_kernel_offsets_follow_the_conv3d_weight_layout():
    offsets = kernel_offsets(3)
    assert offsets.shape == (27, 3)
    assert offsets[0].tolist() == [-1, -1, -1]
    assert offsets[1].tolist() == [-1, -1, 0]
    assert offsets[13].tolist() == [0, 0, 0]
    assert kernel_offsets(1).tolist() == [[0, 0, 0]]


def test_kernel_map_of_two_neighbouring_voxels():
    kernel_map = build_kernel_map(TWO_VOXELS, kernel_size=3)
    pairs = {
        tuple(o.tolist()): p.tolist()
        for o, p in zip(kernel_map.offsets, kernel_map.pairs, strict=True)
    }
    assert pairs[(0, 0, 0)] == [[0, 0], [1, 1]]
    assert pairs[(1, 0, 0)] == [[1, 0]]
    assert pairs[(-1, 0, 0)] == [[0, 1]]
    assert kernel_map.num_pairs == 4


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_kernel_map_matches_brute_force(kernel_size):
    coords, _ = voxelize(synthetic_point_cloud("torus", 400, noise=0.05, seed=2), 0.15)
    kernel_map = build_kernel_map(coords, kernel_size)
    for offset, pairs in zip(kernel_map.offsets.tolist(), kernel_map.pairs, strict=True):
        assert sorted(map(tuple, pairs.tolist())) == brute_force_pairs(coords, offset)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize(("in_channels", "out_channels"), [(3, 4), (1, 2)])
def test_sparse_conv_equals_dense_conv3d_at_active_sites(
    shape, kernel_size, in_channels, out_channels
):
    seed = SHAPES.index(shape) + 10 * kernel_size + in_channels
    points = synthetic_point_cloud(shape, 600, noise=0.03, seed=seed)
    features = torch.randn(600, in_channels, generator=torch.Generator().manual_seed(seed))
    coords, feats = voxelize(points, 0.12, features=features)
    weight = random_weight(out_channels, in_channels, kernel_size, seed)
    sparse = sparse_conv3d(coords, feats, weight, build_kernel_map(coords, kernel_size))
    dense = dense_conv_at_active_sites(coords, feats, weight)
    assert sparse.shape == (len(coords), out_channels)
    assert torch.allclose(sparse, dense, atol=1e-5, rtol=1e-5)


def test_sparse_conv_float64_with_a_5_kernel_builds_its_own_map():
    coords, feats = voxelize(synthetic_point_cloud("box", 500, seed=3).double(), 0.2)
    feats = feats.double()
    weight = random_weight(2, 3, 5, seed=3, dtype=torch.float64)
    sparse = sparse_conv3d(coords, feats, weight)
    assert torch.allclose(sparse, dense_conv_at_active_sites(coords, feats, weight), atol=1e-12)


def test_dense_grid_round_trip():
    coords = torch.tensor([[-2, 5, 1], [0, 4, 1], [-1, 6, 3]])
    feats = torch.arange(6.0).reshape(3, 2)
    grid = to_dense_grid(coords, feats)
    assert grid.shape == (1, 2, 3, 3, 3)
    assert int((grid != 0).sum()) == 5
    assert torch.equal(gather_active_sites(grid, coords), feats)


def test_macs_sparse_versus_dense_conv3d():
    coords, feats = voxelize(synthetic_point_cloud("sphere", 800, seed=1), 0.1)
    weight = random_weight(5, 3, 3, seed=1)
    kernel_map = build_kernel_map(coords, 3)
    macs = conv_macs(coords, kernel_map, weight)
    assert macs.sparse == kernel_map.num_pairs * 3 * 5
    with FlopCounterMode(display=False) as counter:
        F.conv3d(to_dense_grid(coords, feats), weight, padding=1)
    assert macs.dense == counter.get_total_flops() // 2
    assert macs.reduction == pytest.approx(macs.dense / macs.sparse)
    assert macs.reduction > 5


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        (("cube", 10), ValueError, r"shape must be one of \('sphere', 'torus', 'box'\)"),
        (("sphere", 0), ValueError, "n_points must be an int >= 1, got 0"),
        (("sphere", 2.5), TypeError, "n_points must be an int, got float 2.5"),
        (("sphere", 10, -0.1), ValueError, "noise must be a standard deviation >= 0"),
    ],
)
def test_bad_point_cloud_arguments_are_rejected(arguments, error, match):
    with pytest.raises(error, match=match):
        synthetic_point_cloud(*arguments)


@pytest.mark.parametrize(
    ("points", "voxel_size", "error", "match"),
    [
        (torch.ones(4, 2), 0.1, ValueError, r"points must have shape \(N, 3\).*\(4, 2\)"),
        (torch.ones(0, 3), 0.1, ValueError, r"points must have shape \(N, 3\)"),
        (torch.ones(4, 3, dtype=torch.int64), 0.1, TypeError, "points must be a floating-point"),
        (torch.ones(4, 3), 0.0, ValueError, "voxel_size must be positive, got 0.0"),
        (torch.ones(4, 3), -1.0, ValueError, "voxel_size must be positive"),
    ],
)
def test_bad_voxelize_arguments_are_rejected(points, voxel_size, error, match):
    with pytest.raises(error, match=match):
        voxelize(points, voxel_size)


def test_voxelize_rejects_features_of_the_wrong_length():
    with pytest.raises(ValueError, match="features must be a 4 x F tensor"):
        voxelize(torch.ones(4, 3), 0.1, features=torch.ones(3, 2))


@pytest.mark.parametrize(
    ("kernel_size", "error"), [(2, ValueError), (0, ValueError), (-3, ValueError), (3.0, TypeError)]
)
def test_bad_kernel_size_is_rejected(kernel_size, error):
    with pytest.raises(error, match="kernel_size"):
        build_kernel_map(TWO_VOXELS, kernel_size)


@pytest.mark.parametrize(
    ("coords", "error", "match"),
    [
        (TWO_VOXELS.float(), TypeError, "coords must be an integer"),
        (torch.zeros(2, 2, dtype=torch.int64), ValueError, r"coords must have shape \(M, 3\)"),
        (torch.zeros(2, 3, dtype=torch.int64), ValueError, "coords must be unique"),
    ],
)
def test_bad_coords_are_rejected(coords, error, match):
    with pytest.raises(error, match=match):
        build_kernel_map(coords, 3)


@pytest.mark.parametrize(
    ("feats", "weight", "error", "match"),
    [
        (torch.ones(2, 3), torch.ones(4, 3, 3, 3), ValueError, r"weight must have shape \(C_out"),
        (torch.ones(2, 3), torch.ones(4, 3, 2, 2, 2), ValueError, "cubic kernel of odd size"),
        (torch.ones(2, 3), torch.ones(4, 3, 3, 3, 1), ValueError, "cubic kernel of odd size"),
        (torch.ones(2, 2), torch.ones(4, 3, 3, 3, 3), ValueError, r"feats must have shape \(2, 3"),
        (torch.ones(2, 3).double(), torch.ones(4, 3, 3, 3, 3), TypeError, "share a dtype"),
    ],
)
def test_bad_sparse_conv_arguments_are_rejected(feats, weight, error, match):
    with pytest.raises(error, match=match):
        sparse_conv3d(TWO_VOXELS, feats, weight)


def test_sparse_conv_rejects_a_kernel_map_of_another_size():
    kernel_map = build_kernel_map(TWO_VOXELS, 1)
    with pytest.raises(ValueError, match="kernel_map was built for kernel_size=1"):
        sparse_conv3d(TWO_VOXELS, torch.ones(2, 3), torch.ones(4, 3, 3, 3, 3), kernel_map)


def test_macs_count_every_dense_tap():
    weight = torch.ones(1, 1, 3, 3, 3)
    macs = conv_macs(TWO_VOXELS, build_kernel_map(TWO_VOXELS, 3), weight)
    assert macs.sparse == 4
    assert macs.dense == 2 * 27
    assert macs.reduction == pytest.approx(54 / 4)


@pytest.mark.parametrize("ratio", [0, 10**9], ids=["sorted keys", "index grid"])
def test_both_lookups_build_the_brute_force_map(monkeypatch, ratio):
    monkeypatch.setattr(sparseconv, "INDEX_GRID_MAX_RATIO", ratio)
    generator = torch.Generator().manual_seed(4)
    coords = torch.randperm(12**3, generator=generator)[:90]
    coords = torch.stack([coords // 144, coords // 12 % 12, coords % 12], dim=1) - 5
    kernel_map = build_kernel_map(coords.int(), 3)
    for offset, pairs in zip(kernel_map.offsets.tolist(), kernel_map.pairs, strict=True):
        assert sorted(map(tuple, pairs.tolist())) == brute_force_pairs(coords, offset)
        assert pairs[:, 1].tolist() == sorted(pairs[:, 1].tolist())


def test_sparse_conv_rejects_a_kernel_map_of_other_coordinates():
    kernel_map = build_kernel_map(TWO_VOXELS, 3)
    others = torch.tensor([[0, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="kernel_map was built for other coordinates"):
        sparse_conv3d(others, torch.ones(2, 3), torch.ones(4, 3, 3, 3, 3), kernel_map)
    with pytest.raises(ValueError, match="kernel_map was built for other coordinates"):
        sparse_conv3d(TWO_VOXELS.flip(0), torch.ones(2, 3), torch.ones(4, 3, 3, 3, 3),
                      kernel_map)
    with pytest.raises(TypeError, match="kernel_map must be a KernelMap"):
        sparse_conv3d(TWO_VOXELS, torch.ones(2, 3), torch.ones(4, 3, 3, 3, 3),
                      kernel_map.pairs)


def test_the_map_keeps_its_own_copy_of_the_coordinates():
    coords = TWO_VOXELS.clone()
    kernel_map = build_kernel_map(coords, 3)
    coords[1, 0] = 2
    with pytest.raises(ValueError, match="other coordinates"):
        sparse_conv3d(coords, torch.ones(2, 3), torch.ones(4, 3, 3, 3, 3), kernel_map)


def random_voxels(seed, size, count):
    """``count`` distinct voxels (at most) in ``[0, size)^3``, and a generator for features."""
    generator = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, size, (count, 3), generator=generator), dim=0)
    return coords, generator


def grid_of(coords, feats, size):
    """``1 x C x size^3`` with ``feats`` at ``coords`` (no shift: voxel ``c`` at index ``c``)."""
    grid = torch.zeros(1, feats.shape[1], size, size, size, dtype=feats.dtype)
    grid[0][:, coords[:, 0], coords[:, 1], coords[:, 2]] = feats.T
    return grid


def read_at(grid, coords):
    return grid[0][:, coords[:, 0], coords[:, 1], coords[:, 2]].T


def test_strided_coords_are_the_occupied_cells():
    coords = torch.tensor([[0, 0, 0], [1, 1, 1], [2, 0, 1], [-1, 3, 0], [-2, 2, 1]])
    assert strided_coords(coords, 2).tolist() == [[-1, 1, 0], [0, 0, 0], [1, 0, 0]]
    assert torch.equal(strided_coords(coords, 1), torch.unique(coords, dim=0))


STRIDED_LAYERS = given(
    seed=st.integers(0, 2**16), size=st.integers(2, 9), count=st.integers(1, 60),
    kernel_size=st.integers(1, 4), stride=st.integers(2, 3),
    channels=st.tuples(st.integers(1, 3), st.integers(1, 3)))
"""Random voxels in a cube of ``size``, a kernel, a stride and (in, out) channels."""


@settings(max_examples=40, deadline=None)
@STRIDED_LAYERS
def test_strided_sparse_conv_equals_conv3d_at_the_output_coordinates(
        seed, size, count, kernel_size, stride, channels):
    coords, generator = random_voxels(seed, size, count)
    feats = torch.randn(len(coords), channels[0], generator=generator, dtype=torch.float64)
    weight = torch.randn(channels[1], channels[0], *[kernel_size] * 3, generator=generator,
                         dtype=torch.float64)
    kernel_map = build_kernel_map(coords, kernel_size, stride=stride)
    outputs = strided_coords(coords, stride)
    assert torch.equal(kernel_map.outputs, outputs)
    dense = F.conv3d(grid_of(coords, feats, size + stride + kernel_size), weight,
                     stride=stride, padding=(kernel_size - 1) // 2)  # zeros past the voxels
    sparse = sparse_conv3d(coords, feats, weight, kernel_map)
    assert sparse.shape == (len(outputs), channels[1])
    assert torch.allclose(sparse, read_at(dense, outputs), atol=1e-10)


@settings(max_examples=40, deadline=None)
@STRIDED_LAYERS
def test_transposed_sparse_conv_equals_conv_transpose3d_at_the_fine_coordinates(
        seed, size, count, kernel_size, stride, channels):
    fine, generator = random_voxels(seed, size, count)
    kernel_map = build_kernel_map(fine, kernel_size, stride=stride)
    coarse = kernel_map.outputs
    feats = torch.randn(len(coarse), channels[0], generator=generator, dtype=torch.float64)
    weight = torch.randn(channels[0], channels[1], *[kernel_size] * 3, generator=generator,
                         dtype=torch.float64)
    coarse_size = -(-size // stride) + 1
    dense = F.conv_transpose3d(grid_of(coarse, feats, coarse_size), weight, stride=stride,
                               padding=(kernel_size - 1) // 2)
    assert dense.shape[-1] >= size
    sparse = sparse_conv_transpose3d(feats, weight, kernel_map)
    assert sparse.shape == (len(fine), channels[1])
    assert torch.allclose(sparse, read_at(dense, fine), atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), kernel_size=st.integers(1, 4), stride=st.integers(1, 3))
def test_the_map_between_two_coordinate_sets_matches_brute_force(seed, kernel_size, stride):
    coords, generator = random_voxels(seed, 8, 40)
    outputs = torch.unique(torch.randint(-2, 5, (20, 3), generator=generator), dim=0)
    kernel_map = build_kernel_map(coords, kernel_size, out_coords=outputs, stride=stride)
    index = {tuple(c): i for i, c in enumerate(coords.tolist())}
    for offset, pairs in zip(kernel_map.offsets.tolist(), kernel_map.pairs, strict=True):
        wanted = [(index[q], o) for o, c in enumerate(outputs.tolist())
                  if (q := tuple(stride * a + d for a, d in zip(c, offset, strict=True)))
                  in index]
        assert pairs.tolist() == [list(pair) for pair in wanted]


def test_a_tiny_encoder_downsamples_twice_and_comes_back_to_its_voxels():
    coords, feats = voxelize(synthetic_point_cloud("torus", 800, seed=0), 0.1)
    first = build_kernel_map(coords, 2, stride=2)
    second = build_kernel_map(first.outputs, 2, stride=2)
    down = sparse_conv3d(coords, feats, random_weight(4, 3, 2, seed=0), first)
    bottom = sparse_conv3d(first.outputs, down, random_weight(8, 4, 2, seed=1), second)
    assert len(coords) > len(first.outputs) > len(second.outputs) == len(bottom)
    up = sparse_conv_transpose3d(bottom, random_weight(8, 4, 2, seed=2), second)
    back = sparse_conv_transpose3d(up, random_weight(4, 3, 2, seed=3), first)
    assert up.shape == (len(first.outputs), 4) and back.shape == (len(coords), 3)


def test_kernel_offsets_of_an_even_kernel_start_at_zero():
    assert kernel_offsets(2).tolist() == [[a, b, c] for a in (0, 1) for b in (0, 1)
                                          for c in (0, 1)]
    assert kernel_offsets(4)[0].tolist() == [-1, -1, -1]


def test_bad_strided_arguments_are_rejected():
    with pytest.raises(ValueError, match="stride must be an int >= 1, got 0"):
        strided_coords(TWO_VOXELS, 0)
    with pytest.raises(TypeError, match="stride must be an int"):
        build_kernel_map(TWO_VOXELS, 3, stride=2.0)
    with pytest.raises(ValueError, match="kernel_size must be an odd int .* submanifold"):
        build_kernel_map(TWO_VOXELS, 2)
    with pytest.raises(ValueError, match="out_coords must be unique"):
        build_kernel_map(TWO_VOXELS, 2, out_coords=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="out_coords must be an integer torch.Tensor"):
        build_kernel_map(TWO_VOXELS, 2, out_coords=torch.zeros(2, 3))
    strided = build_kernel_map(TWO_VOXELS, 2, stride=2)
    with pytest.raises(ValueError, match=r"feats must have shape \(1, 3\)"):
        sparse_conv_transpose3d(torch.ones(2, 3), torch.ones(3, 4, 2, 2, 2), strided)
    with pytest.raises(ValueError, match="kernel_map was built for kernel_size=2"):
        sparse_conv_transpose3d(torch.ones(1, 3), torch.ones(3, 4, 3, 3, 3), strided)
    with pytest.raises(TypeError, match="kernel_map must be a KernelMap"):
        sparse_conv_transpose3d(torch.ones(1, 3), torch.ones(3, 4, 2, 2, 2), strided.pairs)


def test_benchmark_scenes_times_sparse_against_dense_on_rising_occupancy():
    bench = sparseconv.benchmark_scenes({"sparse": (200, 0.0), "denser": (2000, 0.1)},
                                        channels=4, voxel_size=0.2, min_run_time=0.01)
    table = bench.table
    assert list(table.index) == ["sparse", "denser"] and table.index.name == "scene"
    assert bench.grid_shape == (10, 10, 10)
    assert table.loc["sparse", "occupancy"] < table.loc["denser", "occupancy"] <= 1
    assert (table["fewer MACs"] > 1).all() and (table["sparse runs"] >= 1).all()
    assert table["speed-up"].tolist() == pytest.approx(
        (bench.dense.median_ms / table["sparse ms"]).tolist())
    assert (table["speed-up with map"] < table["speed-up"]).all()
    with pytest.raises(ValueError, match="at least one scene"):
        sparseconv.benchmark_scenes({})
