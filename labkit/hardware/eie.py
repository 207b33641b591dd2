"""EIE: the storage format and processing-element array of Han et al. (2016).

EIE, the Efficient Inference Engine (Han et al. 2016, ISCA), computes the output of a
pruned, weight-shared fully connected layer, ``y = W x`` (rows of ``W`` = outputs), straight
from its compressed form:

* **Weight sharing** (Deep Compression): each non-zero weight is replaced by the nearest of
  a few shared values and stored as a 4-bit index into that codebook. Here index 0 is
  reserved for the value zero and indices 1..15 hold the k-means centroids of the non-zero
  weights, so the padding entries below decode to zero.
* **Interleaved CSC**: row ``i`` belongs to processing element (PE) ``i mod N``. Each PE
  stores the slice of every column ``j`` that falls on its rows as entries ``(v, z)``:
  ``v`` the 4-bit codebook index, ``z`` the 4-bit count of zeros since the previous entry
  of that column slice. A run of more than 15 zeros inserts a padding entry
  ``(v = 0, z = 15)``. Column pointers ``p`` locate column ``j`` at entries
  ``p[j] .. p[j+1] - 1``.
* **Activation sparsity**: only the non-zero activations ``x_j`` are broadcast; each PE then
  walks its entries of column ``j``, one entry per cycle, and accumulates
  ``y_i += codebook[v] * x_j`` for its rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from labkit.hardware import check_codes
from labkit.validation import check_count, check_module, check_seed, check_tensor

if TYPE_CHECKING:
    import pandas as pd

INDEX_BITS = 4
CODEBOOK_SIZE = 2**INDEX_BITS
MAX_ZERO_RUN = 2**INDEX_BITS - 1
POINTER_BITS = 16
VALUE_BITS = 32


@dataclass(frozen=True)
class PESlice:
    """What one processing element stores: its rows of ``W`` in relative-indexed CSC.

    ``codes`` (uint8, ``v``): the codebook index of each entry, 0 for a padding entry.
    ``zero_runs`` (uint8, ``z``): zeros between each entry and the previous one in its
    column slice, in ``[0, 15]``.
    ``column_pointers`` (int64, length ``columns + 1``): column ``j`` is entries
    ``column_pointers[j] .. column_pointers[j+1] - 1``.
    """

    codes: torch.Tensor
    zero_runs: torch.Tensor
    column_pointers: torch.Tensor


@dataclass(frozen=True)
class EIEMatrix:
    """A fully connected layer in EIE's format: a shared codebook and one slice per PE."""

    shape: tuple[int, int]
    codebook: torch.Tensor
    pes: tuple[PESlice, ...]

    @property
    def num_pes(self) -> int:
        """Number of processing elements ``N``; row ``i`` lives on PE ``i mod N``."""
        return len(self.pes)

    @property
    def num_entries(self) -> int:
        """Stored entries over all PEs, padding entries included."""
        return sum(len(pe.codes) for pe in self.pes)

    @property
    def num_padding(self) -> int:
        """Padding entries: zeros stored because a run of zeros exceeded 15."""
        return sum(int((pe.codes == 0).sum()) for pe in self.pes)


@dataclass(frozen=True)
class SpMVReport:
    """The result of one simulated sparse matrix-vector product on the PE array.

    ``output``: ``y = W x`` as the PEs accumulate it.
    ``work_per_pe``: entries each PE processed (one per cycle, padding included).
    ``cycles``: lock-step cycle count, ``sum over broadcast j of max_k n_kj``.
    ``broadcasts`` / ``skipped_activations``: non-zero activations sent / zero ones skipped.
    """

    output: torch.Tensor
    work_per_pe: torch.Tensor
    cycles: int
    broadcasts: int
    skipped_activations: int

    @property
    def load_balance_efficiency(self) -> float:
        """``mean_k work_k / max_k work_k``: 1 when every PE does the same work."""
        busiest = int(self.work_per_pe.max())
        if busiest == 0:
            return 1.0
        return float(self.work_per_pe.double().mean()) / busiest


@dataclass(frozen=True)
class StorageBits:
    """Bits to store one layer: dense, plain CSR and EIE's format."""

    dense: int
    csr: int
    eie: int

    @property
    def eie_vs_dense(self) -> float:
        """Compression ratio ``dense / eie``."""
        return self.dense / self.eie

    @property
    def eie_vs_csr(self) -> float:
        """Compression ratio ``csr / eie``."""
        return self.csr / self.eie


def share_weights(weight: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight sharing by k-means (Han et al. 2016, Deep Compression; used by EIE).

    The non-zero weights are clustered into ``K = min(15, #distinct values)`` groups by
    k-means (scikit-learn, k-means++ initialisation drawn with ``seed``), minimising
    ``sum_i (w_i - c_{a(i)})^2``. With the centroids sorted, ``c_1 < ... < c_K``, the
    codebook is ``[0, c_1, ..., c_K]`` and every weight becomes an index into it:
    ``W_ij ~ codebook[codes_ij]``, with ``codes_ij = 0`` exactly where ``W_ij = 0``.

    Returns ``(codebook, codes)``: float32 of length ``K + 1 <= 16``, and int64 of the
    shape of ``weight``. k-means runs on one thread: on one-dimensional data, starting
    parallel threads costs more than it saves.
    """
    from sklearn.cluster import KMeans  # imported on use: it takes a second

    _check_weight(weight)
    seed = check_seed(seed)
    weight = weight.detach().cpu()
    nonzero = weight != 0
    values = weight[nonzero].double().numpy().reshape(-1, 1)
    num_clusters = min(CODEBOOK_SIZE - 1, len(np.unique(values)))
    codes = torch.zeros(weight.shape, dtype=torch.int64)
    if num_clusters == 0:
        return torch.zeros(1), codes
    with threadpool_limits(limits=1):
        kmeans = KMeans(n_clusters=num_clusters, n_init=1, random_state=seed).fit(values)
    centroids = kmeans.cluster_centers_.ravel()
    order = np.argsort(centroids)
    rank = np.empty_like(order)
    rank[order] = np.arange(num_clusters)
    codebook = torch.cat([torch.zeros(1), torch.from_numpy(centroids[order]).float()])
    codes[nonzero] = torch.from_numpy(rank[kmeans.labels_]) + 1
    return codebook, codes


def relative_index_encode(column_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode one PE's slice of one column as EIE entries ``(v, z)`` (Han et al. 2016).

    For each non-zero at position ``r``, with the previous non-zero at ``q`` (``q = -1`` at
    the start), the run of zeros before it is ``run = r - q - 1``. While ``run > 15``, a
    padding entry ``(0, 15)`` is stored; it stands for 15 zeros and is itself a zero, so
    ``run -= 16``. Then ``(code_r, run)`` is stored. Trailing zeros need no entry.

    Example: codes ``3`` at position 2, ``5`` at 3 and ``7`` at 22 (zeros elsewhere) give
    ``v = [3, 5, 0, 7]`` and ``z = [2, 0, 15, 2]``.

    ``column_codes``: a 1-D integer tensor of codebook indices in ``[0, 15]``, 0 for zero.
    Returns ``(v, z)`` as uint8 tensors of equal length.
    """
    check_codes(column_codes, "column_codes", ndim=1, levels=CODEBOOK_SIZE)
    codes = column_codes.tolist()
    entry_codes, zero_runs = [], []
    previous = -1
    for row in torch.nonzero(column_codes).flatten().tolist():
        run = row - previous - 1
        while run > MAX_ZERO_RUN:
            entry_codes.append(0)
            zero_runs.append(MAX_ZERO_RUN)
            run -= MAX_ZERO_RUN + 1
        entry_codes.append(codes[row])
        zero_runs.append(run)
        previous = row
    return torch.tensor(entry_codes, dtype=torch.uint8), torch.tensor(zero_runs, dtype=torch.uint8)


def encode_eie(weight: torch.Tensor, num_pes: int, seed: int = 0) -> EIEMatrix:
    """Encode a pruned fully connected layer in EIE's format (Han et al. 2016).

    ``weight``: 2-D, rows = outputs, columns = inputs; its zeros are the pruned weights.
    The weights are shared (:func:`share_weights`, k-means drawn with ``seed``), then row
    ``i`` goes to PE ``i mod num_pes``, which stores its rows column by column with
    :func:`relative_index_encode` and records the column pointers.
    """
    _check_num_pes(num_pes)
    codebook, codes = share_weights(weight, seed)
    pes = tuple(_encode_pe_slice(codes[pe::num_pes]) for pe in range(num_pes))
    return EIEMatrix(shape=tuple(weight.shape), codebook=codebook, pes=pes)


def decode_eie(encoded: EIEMatrix) -> torch.Tensor:
    """The dense weight-shared matrix ``codebook[codes]`` back from EIE's format.

    Entry ``e`` of PE ``k`` in column ``j`` sits at local row ``sum (z + 1) - 1`` over the
    column's entries up to ``e``, that is at global row ``local * N + k``.
    """
    dense = torch.zeros(encoded.shape)
    for pe_index, pe in enumerate(encoded.pes):
        local_rows, columns = _entry_positions(pe)
        dense[local_rows * encoded.num_pes + pe_index, columns] = encoded.codebook[pe.codes.long()]
    return dense


def simulate_spmv(encoded: EIEMatrix, activations: torch.Tensor) -> SpMVReport:
    """Simulate ``y = W x`` on EIE's PE array, skipping zero activations (Han et al. 2016).

    Each non-zero ``x_j`` is broadcast; PE ``k`` then processes its ``n_kj`` entries of
    column ``j``, one per cycle (padding entries included), adding ``codebook[v] * x_j`` to
    its output rows. Its work is ``work_k = sum over broadcast j of n_kj``.

    Cycle model (documented simplification): the PEs work in lock-step, each broadcast
    waiting for the slowest PE, so ``cycles = sum over broadcast j of max_k n_kj``. EIE's
    activation queues let fast PEs run ahead; with unbounded queues the count would fall
    to ``max_k work_k``. Load-balance efficiency is ``mean_k work_k / max_k work_k``.
    """
    _check_activations(activations, encoded.shape[1])
    broadcast = activations != 0
    entries_per_column = torch.stack([pe.column_pointers.diff() for pe in encoded.pes])
    broadcast_entries = entries_per_column[:, broadcast]
    output = torch.zeros(encoded.shape[0], dtype=activations.dtype)
    codebook = encoded.codebook.to(activations.dtype)
    for pe_index, pe in enumerate(encoded.pes):
        local_rows, columns = _entry_positions(pe)
        active = broadcast[columns]
        products = codebook[pe.codes[active].long()] * activations[columns[active]]
        output.index_add_(0, local_rows[active] * encoded.num_pes + pe_index, products)
    return SpMVReport(
        output=output,
        work_per_pe=broadcast_entries.sum(dim=1),
        cycles=int(broadcast_entries.amax(dim=0).sum()),
        broadcasts=int(broadcast.sum()),
        skipped_activations=int((~broadcast).sum()),
    )


def storage_bits(encoded: EIEMatrix) -> StorageBits:
    """Storage of the layer in bits, three ways (``R x C`` matrix, ``nnz`` non-zeros).

    * dense: ``R * C * 32``;
    * plain CSR: ``nnz * (32 + 32)`` (value + column index) ``+ (R + 1) * 32`` row pointers;
    * EIE: ``entries * (4 + 4)`` (codebook index + zero run, padding entries included)
      ``+ N * (C + 1) * 16`` (16-bit column pointers per PE, as in Han et al. 2016)
      ``+ len(codebook) * 32`` (the shared values).
    """
    rows, columns = encoded.shape
    nonzeros = encoded.num_entries - encoded.num_padding
    return StorageBits(
        dense=rows * columns * VALUE_BITS,
        csr=nonzeros * 2 * VALUE_BITS + (rows + 1) * VALUE_BITS,
        eie=encoded.num_entries * 2 * INDEX_BITS
        + encoded.num_pes * (columns + 1) * POINTER_BITS
        + len(encoded.codebook) * VALUE_BITS,
    )


def storage_table(encodings: Mapping[int, EIEMatrix]) -> pd.DataFrame:
    """One layer's storage (:func:`storage_bits`) for EIE on several PE counts,
    ``{num_pes: encode_eie(weight, num_pes)}``, after dense and CSR storage of 32-bit
    values: a row per format (index ``format``) with its ``bits`` and how many times
    smaller than dense it is (``vs dense``); the EIE rows add their ``entries``,
    ``padding`` entries, the column ``pointer bits`` (``N * (C + 1) * 16``) and the
    ``pointer share`` of the bits (missing in the dense and CSR rows)."""
    import pandas as pd

    if not encodings:
        raise ValueError("encodings must hold at least one EIE matrix, got none")
    first = storage_bits(next(iter(encodings.values())))
    rows = {name: {"bits": bits, "vs dense": first.dense / bits}
            for name, bits in (("dense, 32-bit", first.dense), ("CSR, 32-bit", first.csr))}
    for num_pes, encoded in encodings.items():
        bits = storage_bits(encoded)
        pointer_bits = num_pes * (encoded.shape[1] + 1) * POINTER_BITS
        rows[f"EIE, {num_pes} PE"] = {"bits": bits.eie, "vs dense": bits.eie_vs_dense,
                                      "entries": encoded.num_entries,
                                      "padding": encoded.num_padding,
                                      "pointer bits": pointer_bits,
                                      "pointer share": pointer_bits / bits.eie}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("format")


def load_balance(encodings: Mapping[int, EIEMatrix], activations: torch.Tensor
                 ) -> pd.DataFrame:
    """How evenly the PEs share the work of many products ``W x``, one per row of
    ``activations``, for each ``{num_pes: encoded}`` (:func:`simulate_spmv`).

    A row per PE count (index ``PEs N``): the lock-step ``cycles`` summed over the
    vectors; ``perfect balance``, the cycles if every PE did the same share of the
    entries; ``lock-step efficiency``, their ratio; ``mean/max work``, the mean PE's work
    over the busiest PE's; and ``work per PE``, the entries each PE processed (a list).
    """
    import pandas as pd

    rows = {}
    for num_pes, encoded in encodings.items():
        reports = [simulate_spmv(encoded, x) for x in activations]
        work = sum(report.work_per_pe for report in reports)
        cycles = sum(report.cycles for report in reports)
        rows[num_pes] = {"cycles": cycles, "perfect balance": work.sum().item() / num_pes,
                         "lock-step efficiency": work.sum().item() / num_pes / cycles,
                         "mean/max work": (work.double().mean() / work.max()).item(),
                         "work per PE": work.tolist()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("PEs N")


@torch.no_grad()
def conv_input_vectors(model: nn.Module, layer: str, images: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The input of the ``nn.Conv2d`` named ``layer`` when ``model`` runs on ``images``
    (``B x C_in x H x W``, recorded by a forward pre-hook, the model in eval mode and
    then back in its own), and the same input unfolded (*im2col*,
    :func:`torch.nn.functional.unfold` with the conv's kernel, padding, stride and
    dilation): one vector ``x`` of ``C_in * k * k`` values per output pixel, image by
    image, so that each output pixel of the conv is ``y = W x``."""
    check_module(model)
    conv = dict(model.named_modules()).get(layer)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"layer must name an nn.Conv2d of the model, got {layer!r}")
    check_tensor(images, "images", ndim=4)
    captured, was_training = [], model.training
    hook = conv.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
    try:
        model.eval()(images)
    finally:
        hook.remove()
        model.train(was_training)
    unfolded = F.unfold(captured[0], conv.kernel_size, dilation=conv.dilation,
                        padding=conv.padding, stride=conv.stride)
    return captured[0], unfolded.transpose(1, 2).reshape(-1, unfolded.shape[1])


def _encode_pe_slice(local_codes: torch.Tensor) -> PESlice:
    """Relative-indexed CSC of one PE's rows (``local_codes``: local rows x columns)."""
    column_entries = [relative_index_encode(column) for column in local_codes.T]
    lengths = torch.tensor([len(codes) for codes, _ in column_entries])
    return PESlice(
        codes=torch.cat([codes for codes, _ in column_entries]),
        zero_runs=torch.cat([runs for _, runs in column_entries]),
        column_pointers=torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),
    )


def _entry_positions(pe: PESlice) -> tuple[torch.Tensor, torch.Tensor]:
    """Local row and column of every entry of one PE.

    Entry ``e`` is in column ``j`` where ``p[j] <= e < p[j+1]``; its local row is the
    running sum of ``z + 1`` from the start of that column, minus one.
    """
    entries = torch.arange(len(pe.codes))
    columns = torch.searchsorted(pe.column_pointers[1:], entries, right=True)
    running = torch.cat([torch.zeros(1, dtype=torch.int64), (pe.zero_runs.long() + 1).cumsum(0)])
    column_start = running[pe.column_pointers[:-1]]
    local_rows = running[1:] - column_start[columns] - 1
    return local_rows, columns


def _check_weight(weight: torch.Tensor) -> None:
    check_tensor(weight, "weight")
    if weight.ndim != 2 or 0 in weight.shape:
        raise ValueError(
            f"weight must be a non-empty 2-D matrix (rows = outputs, columns = inputs), "
            f"got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got dtype {weight.dtype}")


def _check_num_pes(num_pes: int) -> None:
    check_count(num_pes, "num_pes")


def _check_activations(activations: torch.Tensor, num_columns: int) -> None:
    check_tensor(activations, "activations", kind="floating")
    if activations.shape != (num_columns,):
        raise ValueError(
            f"activations must have shape ({num_columns},) to match the weight's columns, "
            f"got {tuple(activations.shape)}"
        )
