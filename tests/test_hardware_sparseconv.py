"""Tests of labkit.hardware.sparseconv: point clouds, voxels, kernel maps, sparse conv3d."""

import pytest
import torch
import torch.nn.functional as F
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
        (("sphere", 0), ValueError, "n_points must be a positive int, got 0"),
        (("sphere", 2.5), ValueError, "n_points must be a positive int"),
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
