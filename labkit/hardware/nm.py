"""2:4 structured sparsity, as run by NVIDIA Ampere sparse Tensor Cores (Mishra et al. 2021).

In every group of ``M = 4`` consecutive weights along the input (reduction) dimension at
most ``N = 2`` are non-zero. An ``R x C`` matrix is then stored as its ``R x C/2`` kept
values plus, for each kept value, its 2-bit position ``p`` in ``{0, 1, 2, 3}`` inside its
group; the hardware uses the positions to pick the matching activations and does half the
multiplications of the dense product.

Metadata layout used here (simpler than the hardware's interleaved one): the positions of
one row, in order, are packed four to a byte, first position in the lowest bits,
``byte_b = p_{4b} | p_{4b+1} << 2 | p_{4b+2} << 4 | p_{4b+3} << 6``, so the metadata is a
uint8 tensor of shape ``R x ceil(C/8)``; unused bits of a row's last byte are zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from labkit.hardware import check_codes
from labkit.measure import MAX_RUN_TIME_S, time_call
from labkit.validation import (
    check_count,
    check_module,
    check_names,
    check_real,
    check_seed,
    check_tensor,
)

if TYPE_CHECKING:
    import pandas as pd

GROUP_SIZE = 4
KEPT_PER_GROUP = 2
POSITION_BITS = 2
POSITIONS_PER_BYTE = 8 // POSITION_BITS
SEMI_STRUCTURED_SKIPPED = "skipped: needs CUDA sm80+"
SEMI_STRUCTURED_FP16_BLOCK = (32, 64)


@dataclass(frozen=True)
class Compressed24:
    """A 2:4 sparse ``R x C`` matrix: ``values`` (``R x C/2``) and packed 2-bit ``metadata``."""

    values: torch.Tensor
    metadata: torch.Tensor
    shape: tuple[int, int]


@dataclass(frozen=True)
class SemiStructuredTiming:
    """Dense versus 2:4 semi-structured ``F.linear`` on a GPU, fp16.

    ``shape`` is ``(batch, out_features, in_features)``; times are medians in seconds from
    :mod:`torch.utils.benchmark`; ``max_abs_difference`` compares the two outputs.
    """

    shape: tuple[int, int, int]
    dense_seconds: float
    sparse_seconds: float
    max_abs_difference: float

    @property
    def speedup(self) -> float:
        """``dense_seconds / sparse_seconds``: above 1 when 2:4 is faster."""
        return self.dense_seconds / self.sparse_seconds


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 mask: in each group of 4 along the last dimension, keep the 2 largest ``|w|``.

    Ties are broken by position, the lowest index wins (a stable sort of ``|w|``).
    Returns a bool tensor of the shape of ``weight`` (Mishra et al. 2021).
    """
    _check_weight(weight)
    rows, columns = weight.shape
    mask = torch.zeros(
        rows, columns // GROUP_SIZE, GROUP_SIZE, dtype=torch.bool, device=weight.device
    )
    mask.scatter_(-1, _kept_positions(weight), True)
    return mask.reshape(rows, columns)


def prune_2_4(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with all but the 2 largest-magnitude weights of every 4 set to zero."""
    return torch.where(mask_2_4(weight), weight, torch.zeros_like(weight))


def compress_2_4(weight: torch.Tensor) -> Compressed24:
    """Compress a 2:4 sparse matrix to its kept values and packed 2-bit positions.

    For group ``g`` of row ``r`` with kept positions ``p_0 < p_1`` (a group with fewer than
    two non-zeros keeps zeros at its lowest free positions):
    ``values[r, 2g + s] = W[r, 4g + p_s]`` and the positions are packed by
    :func:`pack_positions`. Raises ``ValueError`` if a group holds more than 2 non-zeros.
    """
    _check_weight(weight)
    _check_is_2_4(weight)
    positions = _kept_positions(weight).sort(dim=-1).values.flatten(1)
    return Compressed24(
        values=weight.gather(1, _columns_of(positions)),
        metadata=pack_positions(positions),
        shape=tuple(weight.shape),
    )


def decompress_2_4(compressed: Compressed24) -> torch.Tensor:
    """The dense matrix back: ``W[r, 4 * (s // 2) + p_{r,s}] = values[r, s]``, zeros elsewhere."""
    rows, columns = compressed.shape
    positions = unpack_positions(compressed.metadata, columns // KEPT_PER_GROUP)
    dense = torch.zeros(
        rows, columns, dtype=compressed.values.dtype, device=compressed.values.device
    )
    return dense.scatter_(1, _columns_of(positions), compressed.values)


def matmul_2_4(x: torch.Tensor, compressed: Compressed24) -> torch.Tensor:
    """``x @ W.T`` from the compressed form, gathering activations by the metadata.

    ``y[..., r] = sum_s values[r, s] * x[..., 4 * (s // 2) + p_{r,s}]``: ``C/2`` products per
    output instead of ``C``, with no dense ``W`` built (Mishra et al. 2021).
    ``x``: shape ``(..., C)``. Returns shape ``(..., R)``.
    """
    columns = compressed.shape[1]
    check_tensor(x, "x")
    if x.ndim == 0 or x.shape[-1] != columns:
        raise ValueError(f"x must have shape (..., {columns}) to match the weight, got "
                         f"{tuple(x.shape)}")
    positions = unpack_positions(compressed.metadata, columns // KEPT_PER_GROUP)
    gathered = x[..., _columns_of(positions)]
    return (gathered * compressed.values).sum(dim=-1)


def pack_positions(positions: torch.Tensor) -> torch.Tensor:
    """Pack 2-bit positions four to a byte: ``p_{4b} | p_{4b+1} << 2 | ... | p_{4b+3} << 6``.

    ``positions``: integer tensor ``R x K`` with values in ``[0, 3]``.
    Returns uint8 ``R x ceil(K / 4)``.
    """
    check_codes(positions, "positions", ndim=2, levels=GROUP_SIZE)
    padding = -positions.shape[1] % POSITIONS_PER_BYTE
    padded = F.pad(positions.long(), (0, padding))
    groups = padded.reshape(positions.shape[0], -1, POSITIONS_PER_BYTE)
    return (groups << _bit_shifts(positions.device)).sum(dim=-1).to(torch.uint8)


def unpack_positions(metadata: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` 2-bit positions of each row of packed ``metadata`` (int64)."""
    if metadata.dtype != torch.uint8:
        raise TypeError(f"metadata must be a uint8 tensor, got dtype {metadata.dtype}")
    if metadata.ndim != 2:
        raise ValueError(f"metadata must be 2-D (R x bytes), got shape {tuple(metadata.shape)}")
    if not 0 <= count <= metadata.shape[1] * POSITIONS_PER_BYTE:
        raise ValueError(
            f"count must be in [0, {metadata.shape[1] * POSITIONS_PER_BYTE}] for metadata "
            f"with {metadata.shape[1]} bytes per row, got {count}"
        )
    fields = (metadata.long().unsqueeze(-1) >> _bit_shifts(metadata.device)) & (GROUP_SIZE - 1)
    return fields.flatten(1)[:, :count]


def semi_structured_unavailable_reason() -> str | None:
    """Why :func:`semi_structured_linear_benchmark` cannot run here, or ``None`` if it can.

    Sparse Tensor Cores need an NVIDIA GPU of compute capability 8.0 (Ampere) or newer.
    """
    if not torch.cuda.is_available():
        return f"{SEMI_STRUCTURED_SKIPPED} (no CUDA device found)"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"{SEMI_STRUCTURED_SKIPPED} (found compute capability {major}.{minor})"
    return None


def semi_structured_linear_benchmark(
    weight: torch.Tensor,
    batch_size: int = 3072,
    seed: int = 0,
    min_run_time: float = 1.0,
    tolerance: float = 1e-2,
) -> SemiStructuredTiming:
    """Time ``F.linear`` with the 2:4-pruned ``weight`` dense and as a sparse Tensor Core matrix.

    The weight is pruned with :func:`prune_2_4`, cast to fp16 and converted with
    :func:`torch.sparse.to_sparse_semi_structured`; the input is ``batch_size x C`` normal
    noise drawn with ``seed``. The two outputs must agree to
    ``max |y_sparse - y_dense| <= tolerance * max |y_dense|``; both are then timed with
    :mod:`torch.utils.benchmark` (median over at least ``min_run_time`` seconds).

    ``weight``: ``R x C`` with ``R`` a multiple of 32 and ``C`` of 64 (fp16 kernel blocks).
    Raises ``RuntimeError`` starting with ``"skipped: needs CUDA sm80+"`` on a machine
    without such a GPU.
    """
    _check_weight(weight)
    _check_semi_structured_arguments(weight, batch_size, min_run_time)
    check_real(tolerance, "tolerance", 0.0, low_open=True)
    seed = check_seed(seed)
    reason = semi_structured_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    cuda = torch.device("cuda")
    dense_weight = prune_2_4(weight.detach()).to(cuda, torch.float16).contiguous()
    sparse_weight = torch.sparse.to_sparse_semi_structured(dense_weight)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, weight.shape[1], generator=generator).to(cuda, torch.float16)
    dense_output = F.linear(x, dense_weight)
    max_abs_difference = float((F.linear(x, sparse_weight) - dense_output).abs().max())
    if max_abs_difference > tolerance * float(dense_output.abs().max()):
        raise RuntimeError(
            f"2:4 sparse and dense outputs differ by {max_abs_difference:.3g}, more than "
            f"tolerance={tolerance} times the output scale"
        )
    return SemiStructuredTiming(
        shape=(batch_size, *weight.shape),
        dense_seconds=_median_linear_seconds(x, dense_weight, min_run_time),
        sparse_seconds=_median_linear_seconds(x, sparse_weight, min_run_time),
        max_abs_difference=max_abs_difference,
    )


def pad_to_semi_structured(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (``R x C``) with zero rows and columns appended up to multiples of
    :data:`SEMI_STRUCTURED_FP16_BLOCK`, the tile of the fp16 sparse Tensor Core kernels
    (32 rows, 64 columns). Zero groups are 2:4 and add nothing to a product."""
    check_tensor(weight, "weight", ndim=2)
    rows, columns = SEMI_STRUCTURED_FP16_BLOCK
    return F.pad(weight, (0, -weight.shape[1] % columns, 0, -weight.shape[0] % rows))


def semi_structured_layers(model: nn.Module, layers: Sequence[str], batch_size: int,
                           **options) -> pd.DataFrame:
    """Time the ``nn.Linear`` layers of ``model`` named in ``layers``, each 2:4 weight
    padded by :func:`pad_to_semi_structured`, dense and on sparse Tensor Cores with
    :func:`semi_structured_linear_benchmark` (``batch_size`` rows of input; ``options``
    go to it). A row per layer (index ``layer``): its ``out x in`` shape, the dense and
    2:4 medians in microseconds and the speed-up."""
    import pandas as pd  # imported on use: the grader's processes import this module

    check_module(model)
    names = check_names(layers, "layers")
    modules = dict(model.named_modules())
    for name in names:
        if not isinstance(modules.get(name), nn.Linear):
            raise ValueError(f"layers must name nn.Linear layers of the model, got {name!r}")
    rows = {}
    for name in names:
        weight = modules[name].weight.detach()
        timing = semi_structured_linear_benchmark(pad_to_semi_structured(weight),
                                                  batch_size, **options)
        rows[name] = {"out x in": " x ".join(map(str, weight.shape)), **_timing_row(timing)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("layer")


def semi_structured_shapes(shapes: Sequence[tuple[int, int, int]], seed: int = 0,
                           **options) -> pd.DataFrame:
    """:func:`semi_structured_linear_benchmark` on a normal random weight (drawn with
    ``seed``) of each ``(out_features, in_features, batch)`` in ``shapes``: a row per
    shape (index ``in -> out``) with its batch, the dense and 2:4 medians in microseconds,
    the speed-up and the largest output difference. ``options`` go to the benchmark."""
    import pandas as pd  # imported on use (see semi_structured_layers)

    rows = {}
    for shape in shapes:
        if len(shape) != 3:
            raise ValueError(f"shapes must hold (out_features, in_features, batch) "
                             f"triples, got {shape!r}")
        out_features, in_features, batch = (check_count(size, "shapes") for size in shape)
        weight = torch.randn(out_features, in_features,
                             generator=torch.Generator().manual_seed(check_seed(seed)))
        timing = semi_structured_linear_benchmark(weight, batch_size=batch, **options)
        rows[f"{in_features} -> {out_features}"] = {"batch": batch, **_timing_row(timing)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("in -> out")


def _timing_row(timing: SemiStructuredTiming) -> dict[str, float]:
    """The columns of a :class:`SemiStructuredTiming` in a table: microseconds."""
    return {"dense (µs)": timing.dense_seconds * 1e6, "2:4 (µs)": timing.sparse_seconds * 1e6,
            "speed-up": timing.speedup, "max difference": timing.max_abs_difference}


def _median_linear_seconds(x: torch.Tensor, weight: torch.Tensor, min_run_time: float) -> float:
    """Median time of ``F.linear(x, weight)`` in seconds, by :func:`labkit.measure.time_call`."""
    return time_call(lambda: F.linear(x, weight), min_run_time=min_run_time).median_ms / 1e3


def _kept_positions(weight: torch.Tensor) -> torch.Tensor:
    """Positions (``R x C/4 x 2``) of the 2 largest ``|w|`` per group, lowest index on ties."""
    rows, columns = weight.shape
    groups = weight.detach().abs().reshape(rows, columns // GROUP_SIZE, GROUP_SIZE)
    order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
    return order[..., :KEPT_PER_GROUP]


def _columns_of(positions: torch.Tensor) -> torch.Tensor:
    """Column of each kept value: ``4 * (s // 2) + p_s`` for slot ``s`` of a row."""
    slots = torch.arange(positions.shape[1], device=positions.device)
    return GROUP_SIZE * (slots // KEPT_PER_GROUP) + positions


def _bit_shifts(device: torch.device) -> torch.Tensor:
    """``[0, 2, 4, 6]``: the bit offset of each position inside its byte."""
    return torch.arange(POSITIONS_PER_BYTE, device=device) * POSITION_BITS


def _check_weight(weight: torch.Tensor) -> None:
    check_tensor(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(
            f"weight must be 2-D (rows = outputs, columns = inputs), got shape "
            f"{tuple(weight.shape)}"
        )
    if weight.shape[1] == 0 or weight.shape[1] % GROUP_SIZE:
        raise ValueError(
            f"weight must have a positive number of columns divisible by {GROUP_SIZE} "
            f"(groups of {GROUP_SIZE} along the input dimension), got shape "
            f"{tuple(weight.shape)}"
        )


def _check_is_2_4(weight: torch.Tensor) -> None:
    rows, columns = weight.shape
    nonzeros = (weight != 0).reshape(rows, columns // GROUP_SIZE, GROUP_SIZE).sum(dim=-1)
    if (nonzeros > KEPT_PER_GROUP).any():
        row, group = (nonzeros > KEPT_PER_GROUP).nonzero()[0].tolist()
        raise ValueError(
            f"weight is not 2:4 sparse: row {row}, columns {GROUP_SIZE * group}.."
            f"{GROUP_SIZE * group + GROUP_SIZE - 1} hold {int(nonzeros[row, group])} non-zeros "
            f"(at most {KEPT_PER_GROUP} allowed); prune it with prune_2_4 first"
        )


def _check_semi_structured_arguments(
    weight: torch.Tensor, batch_size: int, min_run_time: float
) -> None:
    block_rows, block_columns = SEMI_STRUCTURED_FP16_BLOCK
    rows, columns = weight.shape
    if rows % block_rows or columns % block_columns:
        raise ValueError(
            f"weight shape must be a multiple of {SEMI_STRUCTURED_FP16_BLOCK} for fp16 "
            f"semi-structured kernels, got {tuple(weight.shape)}"
        )
    check_count(batch_size, "batch_size")
    check_real(min_run_time, "min_run_time", 0.0, MAX_RUN_TIME_S, low_open=True)
