"""Comparison 5: sparse kernels against their dense counterparts on this CPU.

* **CSR matrix product.** A ``n x n`` weight with a fraction ``s`` of zeros
  (:func:`labkit.pruning.granularity.fine_grained_mask` of a random matrix), stored as
  ``torch.sparse_csr`` and multiplied by a dense ``n x b`` activation, against the dense
  product. The sparse kernel does ``(1 - s)`` of the multiply-adds but reads an index
  per non-zero and cannot use the dense kernel's register blocking, so it wins only at
  high sparsity: the crossover is the sparsity where the two take the same time,
  interpolated between the two measured sparsities around it (on the logarithm of the
  speed-up).
* **Sparse 3-D convolution.** labkit's gather-GEMM-scatter
  (:func:`labkit.hardware.sparseconv.sparse_conv3d`) against ``conv3d`` on the dense voxel
  grid, for random active voxels at several occupancies of a cubic grid, and for a
  voxelised sphere (:func:`~labkit.hardware.sparseconv.synthetic_point_cloud`). The sparse
  side is timed with its kernel map given (:func:`~labkit.hardware.sparseconv.build_kernel_map`
  once), the map alone, and the whole call building its own map: a scene that changes at
  every frame pays for the map every time.
* **The dense baseline on its fastest path.** ``F.conv3d`` on a CPU runs one of two
  kernels, and ATen picks by shape: for a float input with batch 1, ``groups=1`` and a
  ``3 x 3 x 3`` kernel it calls oneDNN (``aten::mkldnn_convolution``, a JIT-compiled direct
  convolution: ``DNNL_VERBOSE=1`` or ``torch.backends.mkldnn.verbose`` logs
  ``jit:avx2 ... alg:convolution_direct`` plus two reorders of the grid into and out of a
  blocked ``aBcde8b`` layout) only when ``N * C * D * H > 20480``; below that, the native
  ``aten::slow_conv3d`` (vol2col, then one GEMM) runs, about ten times slower per voxel.
  With 16 channels, a 24^3 or 32^3 grid (``16 * 32 * 32 = 16384``) falls below the line, a
  40^3 grid (``25600``) above it: the jump of the dense baseline between grid sizes. So the
  dense side is timed three ways, ``F.conv3d`` as called (the kernel that ran is read off
  ``torch.profiler``), ``F.conv3d`` on channels-last (``torch.channels_last_3d``) tensors,
  which spares oneDNN the reorders, and oneDNN called directly
  (``torch.mkldnn_convolution``, channels-last) whatever the shape; every speed-up divides
  the fastest of the three.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from labkit.hardware.sparseconv import (
    build_kernel_map,
    conv_macs,
    gather_active_sites,
    sparse_conv3d,
    synthetic_point_cloud,
    to_dense_grid,
    voxelize,
)
from labkit.measure import Latency
from labkit.pruning.granularity import fine_grained_mask

from . import report
from .config import Config
from .timing import as_dicts, speedup, time_calls

NAME = "sparse_kernels"
TITLE = "Sparse kernels against dense ones on this CPU"


def csr_row(size: int, columns: int, sparsity: float, config: Config) -> dict:
    """Dense ``W @ X`` against ``W_csr @ X`` for one sparsity."""
    generator = torch.Generator().manual_seed(config.seed)
    weight = torch.randn(size, size, generator=generator)
    weight = weight * fine_grained_mask(weight, sparsity)
    activations = torch.randn(size, columns, generator=generator)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.to_sparse_csr()
    difference = (csr @ activations - weight @ activations).abs().max().item()
    times = time_calls({"dense": lambda: weight @ activations,
                        "csr": lambda: csr @ activations}, config)
    return {"size": size, "columns": columns, "sparsity": sparsity,
            **as_dicts(times),
            "speedup": speedup(times["dense"], times["csr"]),
            "max_abs_difference": difference}


def crossover(rows: list[dict]) -> float | None:
    """The sparsity above which CSR stays faster, interpolated on log(speed-up).

    ``None`` when CSR is slower at the highest sparsity measured; the lowest sparsity
    measured when it is faster everywhere.
    """
    rows = sorted(rows, key=lambda row: row["sparsity"])
    if rows[-1]["speedup"] < 1:
        return None
    first = max((i for i, row in enumerate(rows) if row["speedup"] < 1), default=-1) + 1
    if first == 0:
        return rows[0]["sparsity"]
    below, above = rows[first - 1], rows[first]
    low, high = math.log(below["speedup"]), math.log(above["speedup"])
    return below["sparsity"] + (above["sparsity"] - below["sparsity"]) * -low / (high - low)


def random_sites(grid: int, occupancy: float, generator: torch.Generator) -> torch.Tensor:
    """``round(grid^3 * occupancy)`` distinct random voxels of a ``grid^3`` cube."""
    count = max(1, round(grid**3 * occupancy))
    flat = torch.randperm(grid**3, generator=generator)[:count]
    return torch.stack([flat // grid**2, flat // grid % grid, flat % grid], dim=1)


DENSE_PATHS = ("conv3d", "conv3d, channels-last", "oneDNN direct, channels-last")
"""The three ways the dense convolution is timed; the fastest is the baseline."""


def dense_calls(grid: torch.Tensor, weight: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The dense ``3 x 3 x 3`` convolution of ``grid`` by each of :data:`DENSE_PATHS`, the
    channels-last copies made once, outside the timing."""
    padding = weight.shape[-1] // 2
    grid_last = grid.contiguous(memory_format=torch.channels_last_3d)
    weight_last = weight.contiguous(memory_format=torch.channels_last_3d)
    ones = (1, 1, 1)
    return {
        "conv3d": lambda: F.conv3d(grid, weight, padding=padding),
        "conv3d, channels-last": lambda: F.conv3d(grid_last, weight_last, padding=padding),
        "oneDNN direct, channels-last": lambda: torch.mkldnn_convolution(
            grid_last, weight_last, None, (padding,) * 3, ones, ones, 1),
    }


def aten_kernel(call: Callable[[], object]) -> str:
    """The ATen convolution kernel that ``call()`` runs, read off ``torch.profiler``."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        call()
    names = {event.name for event in profiler.events()}
    return next((kernel for kernel in ("aten::mkldnn_convolution", "aten::slow_conv3d")
                 if kernel in names), "other")


def time_dense(grid: torch.Tensor, weight: torch.Tensor, config: Config) -> dict:
    """Every dense path's latency, the kernel ``F.conv3d`` picks, and the fastest path."""
    calls = dense_calls(grid, weight)
    times = time_calls(calls, config)
    fastest = min(times, key=lambda name: times[name].median_ms)
    return {"paths": as_dicts(times), "fastest": fastest,
            "conv3d_kernel": aten_kernel(calls["conv3d"])}


def conv_row(label: str, coords: torch.Tensor, config: Config) -> dict:
    """Sparse convolution at the active voxels against the fastest dense ``conv3d``."""
    generator = torch.Generator().manual_seed(config.seed)
    channels = config.conv_channels
    feats = torch.randn(len(coords), channels, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, 3, generator=generator)
    kernel_map = build_kernel_map(coords, 3)
    grid = to_dense_grid(coords, feats)
    sparse_output = sparse_conv3d(coords, feats, weight, kernel_map)
    difference = max((gather_active_sites(call(), coords) - sparse_output).abs().max().item()
                     for call in dense_calls(grid, weight).values())
    dense = time_dense(grid, weight, config)
    times = time_calls({
        "sparse": lambda: sparse_conv3d(coords, feats, weight, kernel_map),
        "kernel_map": lambda: build_kernel_map(coords, 3),
        "sparse_with_map": lambda: sparse_conv3d(coords, feats, weight),
    }, config)
    baseline = Latency(**dense["paths"][dense["fastest"]])
    macs = conv_macs(coords, kernel_map, weight)
    return {"input": label, "voxels": len(coords), "grid": list(grid.shape[2:]),
            "occupancy": len(coords) / math.prod(grid.shape[2:]), "channels": channels,
            "dense": dense, **as_dicts(times),
            "speedup": speedup(baseline, times["sparse"]),
            "speedup_with_map": speedup(baseline, times["sparse_with_map"]),
            "mac_reduction": macs.reduction, "max_abs_difference": difference}


def dense_conv_row(size: int, config: Config) -> dict:
    """The dense paths alone on a random ``size^3`` grid: time, and time per output voxel."""
    generator = torch.Generator().manual_seed(config.seed)
    channels = config.conv_channels
    grid = torch.randn(1, channels, size, size, size, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, 3, generator=generator)
    dense = time_dense(grid, weight, config)
    return {"grid": size, "channels": channels, **dense,
            "ns_per_voxel": {name: latency["median_ms"] * 1e6 / size**3
                             for name, latency in dense["paths"].items()}}


def run(config: Config) -> dict:
    csr = [csr_row(config.csr_size, columns, sparsity, config)
           for columns in config.csr_columns for sparsity in config.csr_sparsities]
    crossovers = {columns: crossover([row for row in csr if row["columns"] == columns])
                  for columns in config.csr_columns}
    generator = torch.Generator().manual_seed(config.seed)
    conv = [conv_row("random voxels", random_sites(config.grid_size, occupancy, generator),
                     config) for occupancy in config.occupancies]
    points = synthetic_point_cloud("sphere", config.point_cloud_points, seed=config.seed)
    coords, _ = voxelize(points, config.voxel_size)
    conv.append(conv_row("voxelised sphere", coords, config))
    return {"csr": csr, "csr_crossover": {str(k): v for k, v in crossovers.items()},
            "conv": conv, "dense_conv": [dense_conv_row(size, config)
                                         for size in config.dense_grid_sizes]}


def _crossover_text(value: float | None, highest: float) -> str:
    if value is None:
        return f"not reached at {report.percent(highest)}"
    return f"{100 * value:.1f}%"


def markdown(results: dict) -> str:
    csr = report.table(
        ("weight", "activation columns", "sparsity", "dense", "CSR", "dense / CSR",
         "max difference"),
        [(f"{r['size']}×{r['size']}", r["columns"], report.percent(r["sparsity"]),
          report.milliseconds(r["dense"]), report.milliseconds(r["csr"]),
          report.ratio(r["speedup"]), f"{r['max_abs_difference']:.1e}")
         for r in results["csr"]])
    highest = max(r["sparsity"] for r in results["csr"])
    crossovers = "; ".join(
        f"{columns} column(s): {_crossover_text(value, highest)}"
        for columns, value in results["csr_crossover"].items())
    conv = report.table(
        ("input", "grid", "voxels", "occupancy", "dense, fastest path", "sparse conv",
         "kernel map", "sparse conv building its map", "dense / sparse",
         "dense / (sparse + map)", "MAC reduction", "max difference"),
        [(r["input"], "×".join(map(str, r["grid"])), f"{r['voxels']:,}",
          f"{100 * r['occupancy']:.1f}%",
          f"{report.milliseconds(r['dense']['paths'][r['dense']['fastest']])} "
          f"({r['dense']['fastest']})",
          report.milliseconds(r["sparse"]), report.milliseconds(r["kernel_map"]),
          report.milliseconds(r["sparse_with_map"]),
          report.ratio(r["speedup"]), report.ratio(r["speedup_with_map"]),
          report.ratio(r["mac_reduction"]), f"{r['max_abs_difference']:.1e}")
         for r in results["conv"]])
    dense = report.table(
        ("grid", "`N·C·D·H`", "kernel `F.conv3d` runs", *(f"{path}" for path in DENSE_PATHS),
         "ns per output voxel, fastest"),
        [("×".join([str(r["grid"])] * 3), f"{r['channels'] * r['grid'] ** 2:,}",
          f"`{r['conv3d_kernel']}`",
          *(report.milliseconds(r["paths"][path]) for path in DENSE_PATHS),
          f"{r['ns_per_voxel'][r['fastest']]:.0f} ({r['fastest']})")
         for r in results["dense_conv"]])
    channels = results["conv"][0]["channels"]
    return "\n\n".join([
        "**CSR matrix product** (`torch.sparse_csr`) against the dense product, ms.", csr,
        f"**Crossover sparsity**, where CSR becomes faster: {crossovers}.",
        f"**Sparse 3-D convolution**, 3×3×3, {channels} → {channels} channels, ms.", conv,
        "**The dense baseline alone**, by grid size, ms: `F.conv3d` calls oneDNN only when "
        "`N·C·D·H > 20480`.", dense,
    ]) + "\n"
