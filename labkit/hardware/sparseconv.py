r"""Sparse 3-D convolution on voxelised point clouds (Choy et al. 2019; Tang et al. 2022).

A point cloud fills a tiny fraction of its voxel grid, so a dense ``conv3d`` spends almost
all of its work on empty voxels. Sparse convolution (MinkowskiEngine, Choy et al. 2019;
TorchSparse, Tang et al. 2022) keeps only the active voxels, integer coordinates ``c_i``
with feature vectors ``x_i``, and in submanifold mode computes outputs at the input sites:

.. math::

    y_o = \sum_{d \in \{-\lfloor k/2 \rfloor, \dots, \lfloor k/2 \rfloor\}^3,\;
          c_o + d \text{ active}} W_d \, x_{i(c_o + d)}

TorchSparse computes it offset by offset. The kernel map ``M_d = {(i, o) : c_i = c_o + d}``
is found with a hash table of coordinates; then for each ``d``: gather the ``x_i`` of
``M_d``, multiply them by ``W_d`` in one matrix product (GEMM), and scatter-add the rows
into the ``y_o``. Submanifold convolution is Graham et al. 2018's.

Networks also change resolution. A **strided** (generalized) sparse convolution of stride
``s`` computes at the output coordinates ``{floor(c / s)}`` of the occupied voxels, from
the inputs at ``s * c_o + d``; its kernel map is ``M_d = {(i, o) : c_i = s c_o + d}``
between two coordinate sets. The **transposed** convolution that upsamples back reads the
same map the other way round, from the coarse voxels to the fine ones (MinkowskiEngine,
Choy et al. 2019; TorchSparse). Both compute only at the output coordinates they are
given, not at every voxel the dense convolution would make non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from labkit.measure import Latency, time_call
from labkit.validation import check_count, check_tensor

if TYPE_CHECKING:
    import pandas as pd

SHAPES = ("sphere", "torus", "box")
TORUS_MAJOR_RADIUS = 1.0
TORUS_MINOR_RADIUS = 0.4
INDEX_GRID_MAX_RATIO = 8
""":func:`build_kernel_map` reads a dense index grid when the box of keys has at most this
many entries per query (filling the grid then costs about as much as the queries), and
binary-searches the sorted keys otherwise."""


@dataclass(frozen=True, eq=False)
class KernelMap:
    """For each kernel offset ``d``, the pairs ``(input index, output index)`` it connects.

    ``coords``: the ``M x 3`` input coordinates the map was built for (a copy), so that
    :func:`sparse_conv3d` refuses the map for other coordinates. ``offsets``: int64
    ``k^3 x 3``, in the order of ``weight.flatten(2)`` for a ``conv3d`` weight
    ``(C_out, C_in, k, k, k)``. ``pairs[n]``: int64 ``P_n x 2`` for ``offsets[n]``, by
    output index. ``out_coords``: the output coordinates (a copy), None for a submanifold
    map, whose outputs are ``coords``; ``stride``: ``s`` in ``c_i = s c_o + d``.
    """

    kernel_size: int
    coords: torch.Tensor
    offsets: torch.Tensor
    pairs: tuple[torch.Tensor, ...]
    out_coords: torch.Tensor | None = None
    stride: int = 1

    @property
    def outputs(self) -> torch.Tensor:
        """The output coordinates: ``out_coords``, or ``coords`` for a submanifold map."""
        return self.coords if self.out_coords is None else self.out_coords

    @property
    def num_pairs(self) -> int:
        """Input-output pairs over all offsets: one ``C_in x C_out`` product each."""
        return sum(len(pairs) for pairs in self.pairs)


@dataclass(frozen=True)
class ConvMacs:
    """Multiply-accumulates of one convolution, sparse versus dense ``conv3d``."""

    sparse: int
    dense: int

    @property
    def reduction(self) -> float:
        """``dense / sparse``: how many times fewer MACs the sparse convolution does."""
        return self.dense / self.sparse


def synthetic_point_cloud(
    shape: str, n_points: int, noise: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """``n_points`` points on the surface of a shape, plus Gaussian noise of std ``noise``.

    * ``"sphere"``: the unit sphere, uniform (normalised Gaussian vectors);
    * ``"torus"``: ``((R + r cos v) cos u, (R + r cos v) sin u, r sin v)`` with
      ``R = 1``, ``r = 0.4`` and angles ``u, v`` uniform in ``[0, 2 pi)``;
    * ``"box"``: the surface of the cube ``[-1, 1]^3``, a face chosen uniformly, a point
      uniform on it.

    Returns float32 ``n_points x 3``, the same for the same ``seed``.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    n_points = check_count(n_points, "n_points")
    if not noise >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
    generator = torch.Generator().manual_seed(seed)
    surface = {"sphere": _sphere, "torus": _torus, "box": _box}[shape]
    points = surface(n_points, generator)
    return points + noise * torch.randn(n_points, 3, generator=generator)


def voxelize(
    points: torch.Tensor, voxel_size: float, features: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxelise points: ``c = floor(p / voxel_size)``, one voxel per distinct ``c``.

    Each voxel's feature is the mean of the features of its points (the points' own
    coordinates when ``features`` is None). Returns ``(coords, feats)``: the unique
    coordinates, int64 ``M x 3`` in lexicographic order, and float32 ``M x F``.
    """
    _check_points(points)
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size!r}")
    features = points if features is None else features
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or len(features) != len(points):
        raise ValueError(f"features must be a {len(points)} x F tensor, one row per point")
    coords = torch.floor(points / voxel_size).long()
    coords, voxel_of_point, points_per_voxel = torch.unique(
        coords, dim=0, return_inverse=True, return_counts=True
    )
    feature_sums = torch.zeros(len(coords), features.shape[1]).index_add_(
        0, voxel_of_point, features.float()
    )
    return coords, feature_sums / points_per_voxel.unsqueeze(1)


def kernel_offsets(kernel_size: int) -> torch.Tensor:
    """The ``k^3`` offsets ``d`` in ``{-(k-1)//2, ..., k//2}^3``, last axis fastest.

    That is the order of ``weight.flatten(2)``: ``weight[:, :, a, b, c]`` multiplies the
    input at ``s c_o + (a, b, c) - (k-1)//2`` (``conv3d`` with padding ``(k-1)//2`` is a
    cross-correlation). For odd ``k`` the offsets are centred, ``-k//2 ... k//2``; for
    ``k = 2`` they are ``{0, 1}^3``, the eight finer voxels of a stride-2 output.
    TorchSparse and MinkowskiEngine order the offsets with the *first* axis fastest.
    """
    kernel_size = _check_kernel_size(kernel_size, odd=False)
    steps = torch.arange(kernel_size) - (kernel_size - 1) // 2
    return torch.cartesian_prod(steps, steps, steps)


def strided_coords(coords: torch.Tensor, stride: int) -> torch.Tensor:
    """The output coordinates of a sparse convolution of stride ``s``: the distinct
    ``floor(c / s)`` of the input coordinates, int64 in lexicographic order.

    One output per ``s x s x s`` cell holding an occupied voxel, as MinkowskiEngine and
    TorchSparse downsample (they keep coordinates in input units, ``s floor(c / s)``; here
    each resolution counts in its own voxels).
    """
    _check_coords(coords)
    stride = check_count(stride, "stride")
    return torch.unique(torch.div(coords.long(), stride, rounding_mode="floor"), dim=0)


def build_kernel_map(coords: torch.Tensor, kernel_size: int,
                     out_coords: torch.Tensor | None = None, stride: int = 1) -> KernelMap:
    """The kernel map ``M_d = {(i, o) : c_i = s c_o + d}`` for every offset ``d``.

    With the defaults, the submanifold map: the outputs are the inputs ``coords``, ``s = 1``
    and ``k`` odd. With ``stride = s > 1`` and no ``out_coords``, the outputs are
    :func:`strided_coords`; ``out_coords`` gives them explicitly (a map between two
    coordinate sets, any ``k``).

    Each voxel gets one integer key, its coordinates relative to the box of ``coords``
    packed ``key = (x * Y + y) * Z + z``. For every offset at once, each output voxel
    ``o`` looks up ``key(s c_o + d)``; a hit is an input ``i``. The lookup plays the GPU
    hash table of Tang et al. 2022 with whole-tensor operations, no Python loop over
    voxels:

    * the keys sorted once, and a binary search per query (``torch.searchsorted``),
      ``O(k^3 M log M)``;
    * or, when the box of keys has at most :data:`INDEX_GRID_MAX_RATIO` entries per query,
      a dense index grid over that box (``grid[key] = i``, -1 elsewhere; SpConv's way,
      Yan et al. 2018), one read per query.

    Both give the same map; pairs come by output index.
    """
    _check_coords(coords)
    stride = check_count(stride, "stride")
    submanifold = out_coords is None and stride == 1
    kernel_size = _check_kernel_size(kernel_size, odd=submanifold)
    if out_coords is None:
        outputs = coords if submanifold else strided_coords(coords, stride)
    else:
        _check_coords(out_coords, "out_coords")
        if len(torch.unique(out_coords, dim=0)) != len(out_coords):
            raise ValueError("out_coords must be unique: one row per output voxel")
        outputs = out_coords
    offsets = kernel_offsets(kernel_size)
    queries = (stride * outputs.long())[None] + offsets[:, None]
    inputs, hits = _lookup(coords, queries.reshape(-1, 3))
    count = len(outputs)
    per_offset = torch.bincount(hits // count, minlength=len(offsets)).tolist()
    pairs = torch.stack([inputs, hits % count], dim=1).split(per_offset)
    return KernelMap(kernel_size=kernel_size, coords=coords.clone(), offsets=offsets,
                     pairs=tuple(pairs), out_coords=None if submanifold else outputs.clone(),
                     stride=stride)


def _lookup(coords: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every query coordinate that is a voxel of ``coords``: ``(voxel index, query
    index)``, by query index. Queries outside the box of ``coords`` miss without a look."""
    low = coords.long().amin(dim=0)
    extent = coords.long().amax(dim=0) - low + 1
    strides = torch.stack([extent[1] * extent[2], extent[2], torch.ones_like(extent[2])])
    keys = ((coords.long() - low) * strides).sum(dim=1)
    sorted_keys, order = torch.sort(keys)
    if (sorted_keys[1:] == sorted_keys[:-1]).any():
        raise ValueError("coords must be unique: one row per active voxel")
    local = queries - low
    inside = ((local >= 0) & (local < extent)).all(dim=1).nonzero().squeeze(1)
    query_keys = (local.index_select(0, inside) * strides).sum(dim=1)
    volume = int(extent.prod())
    if volume <= INDEX_GRID_MAX_RATIO * len(queries):
        grid = torch.full((volume,), -1, dtype=torch.long)
        grid[keys] = torch.arange(len(keys))
        found = grid.index_select(0, query_keys)
        hit = found >= 0
        return found[hit], inside[hit]
    positions = torch.searchsorted(sorted_keys, query_keys).clamp_(max=len(keys) - 1)
    hit = sorted_keys.index_select(0, positions) == query_keys
    return order.index_select(0, positions[hit]), inside[hit]


def sparse_conv3d(
    coords: torch.Tensor,
    feats: torch.Tensor,
    weight: torch.Tensor,
    kernel_map: KernelMap | None = None,
) -> torch.Tensor:
    """Sparse convolution: gather, GEMM per offset, scatter-add (Tang et al. 2022).

    ``y = 0``; for each offset ``d`` with pairs ``(i, o)`` in ``M_d``:
    ``y[o] += feats[i] @ W_d.T``, where ``W_d = weight[:, :, a, b, c]`` is ``C_out x C_in``.
    Equal to ``conv3d(grid, weight, stride=s, padding=(k-1)//2)`` read at the output
    coordinates. The gather and the scatter-add run once over the pairs of all offsets,
    the GEMMs offset by offset.

    ``coords``: int64 ``M x 3`` unique; ``feats``: ``M x C_in``;
    ``weight``: ``(C_out, C_in, k, k, k)``; ``kernel_map``: from :func:`build_kernel_map`
    for these ``coords`` (the submanifold map, odd ``k``, built here when None; a map built
    for other coordinates or another kernel size raises ``ValueError``). Returns one row
    of ``C_out`` per output coordinate (``kernel_map.outputs``).
    """
    _check_coords(coords)
    _check_conv_weight(weight, feats, len(coords),
                       odd=getattr(kernel_map, "out_coords", None) is None)
    kernel_size = weight.shape[-1]
    if kernel_map is None:
        kernel_map = build_kernel_map(coords, kernel_size)
    _check_kernel_map(kernel_map, coords, kernel_size)
    return _gather_gemm_scatter(feats, weight.flatten(2).permute(2, 1, 0), kernel_map.pairs,
                                source=0, count=len(kernel_map.outputs))


def sparse_conv_transpose3d(feats: torch.Tensor, weight: torch.Tensor,
                            kernel_map: KernelMap) -> torch.Tensor:
    """Transposed sparse convolution: the strided layer's kernel map read backwards, from
    its outputs (coarse) to its inputs (fine), as MinkowskiEngine and TorchSparse upsample.

    ``y = 0``; for each offset ``d`` with pairs ``(i, o)`` in ``M_d``:
    ``y[i] += feats[o] @ W_d``, where ``W_d = weight[:, :, a, b, c]`` is ``C_in x C_out``
    (``conv_transpose3d``'s layout). Equal to ``conv_transpose3d(grid, weight, stride=s,
    padding=(k-1)//2)`` read at the fine coordinates.

    ``feats``: one row of ``C_in`` per output of the map (``kernel_map.outputs``);
    ``weight``: ``(C_in, C_out, k, k, k)`` with ``k = kernel_map.kernel_size``;
    ``kernel_map``: the map of the strided layer, :func:`build_kernel_map` ``(fine, k,
    stride=s)``. Returns one row of ``C_out`` per fine coordinate (``kernel_map.coords``).
    """
    if not isinstance(kernel_map, KernelMap):
        raise TypeError(f"kernel_map must be a KernelMap from build_kernel_map, got "
                        f"{type(kernel_map).__name__}")
    as_conv = weight.transpose(0, 1) if isinstance(weight, torch.Tensor) and weight.ndim == 5 \
        else weight
    _check_conv_weight(as_conv, feats, len(kernel_map.outputs), odd=False)
    if weight.shape[-1] != kernel_map.kernel_size:
        raise ValueError(f"kernel_map was built for kernel_size={kernel_map.kernel_size}, "
                         f"but weight has kernel size {weight.shape[-1]}")
    return _gather_gemm_scatter(feats, weight.flatten(2).permute(2, 0, 1), kernel_map.pairs,
                                source=1, count=len(kernel_map.coords))


def _gather_gemm_scatter(feats: torch.Tensor, weights: torch.Tensor,
                         pairs: tuple[torch.Tensor, ...], source: int,
                         count: int) -> torch.Tensor:
    """``y[p[1 - source]] += feats[p[source]] @ weights[n]`` over the pairs ``p`` of every
    offset ``n``; ``weights``: ``k^3 x C_in x C_out``; ``y``: ``count x C_out``."""
    together = torch.cat(pairs)
    gathered = feats[together[:, source]].split([len(p) for p in pairs])
    products = torch.cat([rows @ weights[index] for index, rows in enumerate(gathered)])
    output = torch.zeros(count, weights.shape[2], dtype=feats.dtype)
    return output.index_add_(0, together[:, 1 - source], products)


def to_dense_grid(coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """The voxels as a dense ``1 x C x D x H x W`` grid, zeros at empty voxels.

    Voxel ``c`` lands at ``c - min(coords)``; the grid just covers the coordinates.
    """
    _check_coords(coords)
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or len(feats) != len(coords):
        raise ValueError(f"feats must be a {len(coords)} x C tensor, one row per voxel")
    local = coords - coords.amin(dim=0)
    extent = (local.amax(dim=0) + 1).tolist()
    grid = torch.zeros(feats.shape[1], *extent, dtype=feats.dtype)
    grid[:, local[:, 0], local[:, 1], local[:, 2]] = feats.T
    return grid.unsqueeze(0)


def gather_active_sites(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Read a ``1 x C x D x H x W`` grid back at the voxels of :func:`to_dense_grid`: ``M x C``."""
    _check_coords(coords)
    local = coords - coords.amin(dim=0)
    return grid[0][:, local[:, 0], local[:, 1], local[:, 2]].T


def conv_macs(coords: torch.Tensor, kernel_map: KernelMap, weight: torch.Tensor) -> ConvMacs:
    """MACs of the sparse convolution against ``conv3d`` on the grid of :func:`to_dense_grid`.

    * sparse: ``sum_d |M_d| * C_in * C_out``, one matrix-vector product per pair;
    * dense: ``D * H * W * k^3 * C_in * C_out``, every output voxel times every tap,
      zeros included (what ``FlopCounterMode`` counts, halved).
    """
    _check_coords(coords)
    out_channels, in_channels, kernel_size = weight.shape[0], weight.shape[1], weight.shape[-1]
    extent = coords.amax(dim=0) - coords.amin(dim=0) + 1
    per_product = in_channels * out_channels
    return ConvMacs(
        sparse=kernel_map.num_pairs * per_product,
        dense=math.prod(extent.tolist()) * kernel_size**3 * per_product,
    )


@dataclass(frozen=True)
class SceneBenchmark:
    """Sparse against dense convolution on scenes of rising occupancy
    (:func:`benchmark_scenes`): a row per scene in ``table``, the dense ``conv3d`` on the
    densest scene's grid of ``grid_shape`` in ``dense``."""

    table: pd.DataFrame
    dense: Latency
    grid_shape: tuple[int, ...]


def benchmark_scenes(scenes: Mapping[str, tuple[int, float]], *, channels: int = 16,
                     voxel_size: float = 1 / 30, kernel_size: int = 3,
                     min_run_time: float = 1.0, seed: int = 0) -> SceneBenchmark:
    """Time one ``channels -> channels`` convolution, sparse and dense, on point clouds.

    ``scenes`` maps a label to ``(points, noise)``: that many points on the unit sphere
    (:func:`synthetic_point_cloud`, ``seed``) with Gaussian noise, those inside
    ``[-1, 1]^3`` voxelised at ``voxel_size``; the more points and noise, the more voxels
    are occupied. Per scene, :func:`labkit.measure.time_call` (one thread) times the
    kernel map for ``min_run_time / 5`` s and :func:`sparse_conv3d` for ``min_run_time``
    s; ``conv3d`` on the dense grid of the last scene runs for ``3 * min_run_time`` s.
    The table (index ``scene``) has the ``occupancy``, the ``voxels``, how many times
    ``fewer MACs`` the sparse convolution does, the ``sparse ms`` median, its ``sparse
    IQR`` and ``sparse runs``, the ``kernel map ms``, and the ``speed-up`` over dense
    without and ``with map`` (building the map counted in).
    """
    import pandas as pd

    if not scenes:
        raise ValueError("scenes must name at least one scene, got none")
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, channels, *[kernel_size] * 3, generator=generator)
    rows = {}
    for label, (n_points, noise) in scenes.items():
        points = synthetic_point_cloud("sphere", n_points, noise=noise, seed=seed)
        coords, _ = voxelize(points[(points.abs() <= 1).all(dim=1)], voxel_size)
        feats = torch.randn(len(coords), channels, generator=generator)
        grid = to_dense_grid(coords, feats)
        map_time = time_call(lambda c=coords: build_kernel_map(c, kernel_size),
                             min_run_time=min_run_time / 5)
        kernel_map = build_kernel_map(coords, kernel_size)
        sparse = time_call(lambda c=coords, x=feats, m=kernel_map: sparse_conv3d(c, x, weight, m),
                           min_run_time=min_run_time)
        rows[label] = {"occupancy": len(coords) / grid[0, 0].numel(), "voxels": len(coords),
                       "fewer MACs": conv_macs(coords, kernel_map, weight).reduction,
                       "sparse ms": sparse.median_ms, "sparse IQR": sparse.iqr_ms,
                       "sparse runs": sparse.runs, "kernel map ms": map_time.median_ms}
    dense = time_call(lambda: F.conv3d(grid, weight, padding=kernel_size // 2),
                      min_run_time=3 * min_run_time)
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("scene")
    table["speed-up"] = dense.median_ms / table["sparse ms"]
    table["speed-up with map"] = dense.median_ms / (table["sparse ms"] + table["kernel map ms"])
    return SceneBenchmark(table, dense, tuple(grid.shape[2:]))


def _sphere(n_points: int, generator: torch.Generator) -> torch.Tensor:
    directions = torch.randn(n_points, 3, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


def _torus(n_points: int, generator: torch.Generator) -> torch.Tensor:
    u, v = 2 * math.pi * torch.rand(2, n_points, generator=generator)
    ring = TORUS_MAJOR_RADIUS + TORUS_MINOR_RADIUS * torch.cos(v)
    height = TORUS_MINOR_RADIUS * torch.sin(v)
    return torch.stack([ring * torch.cos(u), ring * torch.sin(u), height], dim=1)


def _box(n_points: int, generator: torch.Generator) -> torch.Tensor:
    points = 2 * torch.rand(n_points, 3, generator=generator) - 1
    face_axis = torch.randint(0, 3, (n_points,), generator=generator)
    face_side = 2.0 * torch.randint(0, 2, (n_points,), generator=generator) - 1
    points[torch.arange(n_points), face_axis] = face_side
    return points


def _check_points(points: torch.Tensor) -> None:
    if not isinstance(points, torch.Tensor) or not points.is_floating_point():
        raise TypeError("points must be a floating-point torch.Tensor")
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"points must have shape (N, 3) with N >= 1, got {tuple(points.shape)}")
    check_tensor(points, "points")


def _check_coords(coords: torch.Tensor, argument: str = "coords") -> None:
    if (
        not isinstance(coords, torch.Tensor)
        or coords.is_floating_point()
        or coords.dtype == torch.bool
    ):
        raise TypeError(f"{argument} must be an integer torch.Tensor of voxel coordinates")
    if coords.ndim != 2 or coords.shape[1] != 3 or len(coords) == 0:
        raise ValueError(f"{argument} must have shape (M, 3) with M >= 1, got "
                         f"{tuple(coords.shape)}")


def _check_kernel_size(kernel_size: int, *, odd: bool = True) -> int:
    kernel_size = check_count(kernel_size, "kernel_size")
    if odd and kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1 (1, 3, 5, ...) for a "
                         f"submanifold map, centred on each voxel, got {kernel_size}")
    return kernel_size


def _check_kernel_map(kernel_map: KernelMap, coords: torch.Tensor, kernel_size: int) -> None:
    if not isinstance(kernel_map, KernelMap):
        raise TypeError(f"kernel_map must be a KernelMap from build_kernel_map, got "
                        f"{type(kernel_map).__name__}")
    if kernel_map.kernel_size != kernel_size:
        raise ValueError(
            f"kernel_map was built for kernel_size={kernel_map.kernel_size}, "
            f"but weight has kernel size {kernel_size}"
        )
    if kernel_map.coords.shape != coords.shape or not torch.equal(kernel_map.coords, coords):
        raise ValueError(
            f"kernel_map was built for other coordinates than coords ({len(coords)} voxels): "
            "build it with build_kernel_map(coords, kernel_size) for these coordinates"
        )


def _check_conv_weight(weight: torch.Tensor, feats: torch.Tensor, num_voxels: int, *,
                       odd: bool) -> None:
    if not isinstance(weight, torch.Tensor) or weight.ndim != 5:
        found = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must have shape (C_out, C_in, k, k, k), got {found}")
    kernel = tuple(weight.shape[2:])
    if len(set(kernel)) != 1 or (odd and kernel[0] % 2 == 0):
        size = "of odd size" if odd else "(k, k, k)"
        raise ValueError(f"weight must have a cubic kernel {size}, got kernel {kernel}")
    if not isinstance(feats, torch.Tensor) or feats.shape != (num_voxels, weight.shape[1]):
        found = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(
            f"feats must have shape ({num_voxels}, {weight.shape[1]}) = (voxels, C_in), got {found}"
        )
    if feats.dtype != weight.dtype:
        raise TypeError(
            f"feats and weight must share a dtype, got {feats.dtype} and {weight.dtype}"
        )
