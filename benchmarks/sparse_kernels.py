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
  (:func:`labkit.hardware.sparseconv.sparse_conv3d`, with the kernel map built once by
  :func:`~labkit.hardware.sparseconv.build_kernel_map`) against ``F.conv3d`` on the dense
  voxel grid, for random active voxels at several occupancies of a cubic grid, and for a
  voxelised sphere (:func:`~labkit.hardware.sparseconv.synthetic_point_cloud`). The
  kernel map is a Python hash table here, so its build time is reported apart. The dense
  baseline itself is timed alone at several grid sizes: its cost per voxel is not
  constant on a CPU (the kernel the convolution library picks depends on the shape), and
  a speed-up is only as meaningful as the baseline it divides.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from labkit.hardware.sparseconv import (
    build_kernel_map,
    conv_macs,
    gather_active_sites,
    sparse_conv3d,
    synthetic_point_cloud,
    to_dense_grid,
    voxelize,
)
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


def conv_row(label: str, coords: torch.Tensor, config: Config) -> dict:
    """Sparse convolution at the active voxels against ``conv3d`` on the dense grid."""
    generator = torch.Generator().manual_seed(config.seed)
    channels = config.conv_channels
    feats = torch.randn(len(coords), channels, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, 3, generator=generator)
    kernel_map = build_kernel_map(coords, 3)
    grid = to_dense_grid(coords, feats)
    dense_output = gather_active_sites(F.conv3d(grid, weight, padding=1), coords)
    difference = (sparse_conv3d(coords, feats, weight, kernel_map) - dense_output).abs().max()
    times = time_calls({
        "dense": lambda: F.conv3d(grid, weight, padding=1),
        "sparse": lambda: sparse_conv3d(coords, feats, weight, kernel_map),
        "kernel_map": lambda: build_kernel_map(coords, 3),
    }, config)
    dense, sparse, mapping = times["dense"], times["sparse"], times["kernel_map"]
    macs = conv_macs(coords, kernel_map, weight)
    return {"input": label, "voxels": len(coords), "grid": list(grid.shape[2:]),
            "occupancy": len(coords) / math.prod(grid.shape[2:]), "channels": channels,
            **as_dicts(times),
            "speedup": speedup(dense, sparse),
            "speedup_with_map": dense.median_ms / (sparse.median_ms + mapping.median_ms),
            "mac_reduction": macs.reduction, "max_abs_difference": difference.item()}


def dense_conv_row(size: int, config: Config) -> dict:
    """``conv3d`` alone on a random ``size^3`` grid: time, and time per output voxel."""
    generator = torch.Generator().manual_seed(config.seed)
    channels = config.conv_channels
    grid = torch.randn(1, channels, size, size, size, generator=generator)
    weight = torch.randn(channels, channels, 3, 3, 3, generator=generator)
    times = time_calls({"dense": lambda: F.conv3d(grid, weight, padding=1)}, config)
    return {"grid": size, **as_dicts(times),
            "ns_per_voxel": times["dense"].median_ms * 1e6 / size**3}


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
        ("input", "grid", "voxels", "occupancy", "dense `conv3d`", "sparse conv", "kernel map",
         "dense / sparse", "with the map", "MAC reduction", "max difference"),
        [(r["input"], "×".join(map(str, r["grid"])), f"{r['voxels']:,}",
          f"{100 * r['occupancy']:.1f}%", report.milliseconds(r["dense"]),
          report.milliseconds(r["sparse"]), report.milliseconds(r["kernel_map"]),
          report.ratio(r["speedup"]), report.ratio(r["speedup_with_map"]),
          report.ratio(r["mac_reduction"]), f"{r['max_abs_difference']:.1e}")
         for r in results["conv"]])
    dense = report.table(
        ("grid", "dense `conv3d`", "ns per output voxel"),
        [("×".join([str(r["grid"])] * 3), report.milliseconds(r["dense"]),
          f"{r['ns_per_voxel']:.0f}") for r in results["dense_conv"]])
    channels = results["conv"][0]["channels"]
    return "\n\n".join([
        "**CSR matrix product** (`torch.sparse_csr`) against the dense product, ms.", csr,
        f"**Crossover sparsity**, where CSR becomes faster: {crossovers}.",
        f"**Sparse 3-D convolution**, 3×3×3, {channels} → {channels} channels, ms.", conv,
        "**The dense baseline alone**, by grid size, ms.", dense,
    ]) + "\n"
