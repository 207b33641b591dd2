"""Checks of lab 07: EIE's relative indices, 2:4 metadata and sparse-convolution kernel
maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from labkit.grading.checks.core import Case, Check, close, exact
from labkit.hardware import eie, nm, sparseconv


def _codes_with_gaps(length: int, nonzeros: dict[int, int]) -> torch.Tensor:
    codes = torch.zeros(length, dtype=torch.int64)
    codes[list(nonzeros)] = torch.tensor(list(nonzeros.values()))
    return codes


def _stacked_pair(function, case: Case) -> torch.Tensor:
    """The ``(v, z)`` pair of tensors the function returns, stacked into one."""
    return torch.stack(tuple(function(*case.args)))


def _relative_index_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    random_codes = torch.randint(1, 16, (64,), generator=generator)
    random_codes[torch.rand(64, generator=generator) < 0.9] = 0
    columns = [
        ("empty column", torch.zeros(0, dtype=torch.int64)),
        ("all zeros: trailing zeros need no entry", torch.zeros(20, dtype=torch.int64)),
        ("no zeros", torch.tensor([1, 2, 3, 4])),
        ("the example: 3 at row 2, 5 at 3, 7 at 22", _codes_with_gaps(24, {2: 3, 3: 5, 22: 7})),
        ("a run of 15 zeros needs no padding", _codes_with_gaps(17, {15: 9})),
        ("a run of 16 zeros needs one padding entry", _codes_with_gaps(17, {16: 9})),
        ("a run of 31 zeros needs one padding entry", _codes_with_gaps(40, {31: 2})),
        ("a run of 32 zeros needs two padding entries", _codes_with_gaps(40, {32: 2})),
        ("two long runs", _codes_with_gaps(60, {0: 1, 20: 15, 55: 8})),
        ("codes given as uint8", _codes_with_gaps(30, {1: 4, 29: 6}).to(torch.uint8)),
        ("random column, 90% zeros", random_codes),
    ]
    return [Case(label, (codes,)) for label, codes in columns]


def _hidden_relative_index(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for density in (0.05, 0.3, 0.8):
        codes = torch.randint(1, 16, (90,), generator=generator)
        codes[torch.rand(90, generator=generator) > density] = 0
        cases.append(Case(f"random column, {density:.0%} non-zero", (codes,)))
    return cases


RELATIVE_INDEX_ENCODE = Check(
    name="relative_index_encode",
    reference=eie.relative_index_encode,
    cases=_relative_index_cases,
    hidden=_hidden_relative_index,
    observe=_stacked_pair,
    compare=exact,
    replaces=("labkit.hardware.eie.relative_index_encode", "labkit.hardware.eie.encode_eie"),
    conventions=("`torch.uint8`", "equal length", "Zeros after the last non-zero need no entry",
                 "while run > 15"),
)


def _metadata_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    matrices = [
        ("one group, kept at 1 and 3", torch.tensor([[0.0, 5.0, 0.0, -3.0]])),
        ("one group, kept at 2 and 3", torch.tensor([[0.0, 0.0, 1.0, 2.0]])),
        ("one group, kept at 0 and 1", torch.tensor([[-4.0, 4.0, 0.0, 0.0]])),
        ("a single non-zero keeps the lowest free zero", torch.tensor([[0.0, 0.0, 7.0, 0.0]])),
        ("all-zero rows", torch.zeros(2, 8)),
        ("8 columns: one full byte per row",
         torch.tensor([[1.0, 0, 0, 2, 0, 3, 4, 0], [0, 0, 5, 6, 7, 0, 8, 0]])),
        ("12 columns: a half-used second byte",
         nm.prune_2_4(torch.randn(3, 12, generator=generator))),
        ("random 2:4 matrix, 6 x 32", nm.prune_2_4(torch.randn(6, 32, generator=generator))),
        ("float64 weights", nm.prune_2_4(torch.randn(4, 16, generator=generator).double())),
    ]
    return [Case(label, (weight,)) for label, weight in matrices]


def _hidden_metadata(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    return [Case("random 2:4 matrix, 5 x 24",
                 (nm.prune_2_4(torch.randn(5, 24, generator=generator)),)),
            Case("random 2:4 matrix, 2 x 4",
                 (nm.prune_2_4(torch.randn(2, 4, generator=generator)),))]


def _packed_metadata(weight: torch.Tensor) -> torch.Tensor:
    return nm.compress_2_4(weight).metadata


PACK_2_4_METADATA = Check(
    name="pack_2_4_metadata",
    reference=_packed_metadata,
    cases=_metadata_cases,
    hidden=_hidden_metadata,
    compare=exact,
    replaces=("labkit.hardware.nm.compress_2_4", "labkit.hardware.nm.pack_positions"),
    conventions=("increasing order", "filled up with its lowest positions",
                 "Pack them four to a byte", "`torch.uint8`", "unused bits"),
)


def kernel_map_table(pairs_per_offset: Sequence[torch.Tensor]) -> torch.Tensor:
    """All pairs as rows ``(offset index, input, output)``, sorted: one canonical order."""
    rows = [torch.cat([torch.full((len(pairs), 1), index), pairs.reshape(-1, 2).long()], dim=1)
            for index, pairs in enumerate(pairs_per_offset)]
    table = torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64)
    for column in (1, 2, 0):
        table = table[table[:, column].argsort(stable=True)]
    return table


def _kernel_map_observation(function, case: Case) -> torch.Tensor:
    return kernel_map_table(function(*case.args))


def _reference_pairs(coords: torch.Tensor, kernel_size: int) -> list[torch.Tensor]:
    return sparseconv.build_kernel_map(coords, kernel_size).pairs


def _kernel_map_cases() -> list[Case]:
    sphere, _ = sparseconv.voxelize(sparseconv.synthetic_point_cloud("sphere", 300), 0.25)
    torus, _ = sparseconv.voxelize(sparseconv.synthetic_point_cloud("torus", 300), 0.2)
    block = torch.cartesian_prod(*[torch.arange(2)] * 3)
    clouds = [
        ("one voxel, k=1", torch.tensor([[0, 0, 0]]), 1),
        ("one voxel, k=3: only the centre offset", torch.tensor([[5, -2, 7]]), 3),
        ("two neighbours along z, k=3", torch.tensor([[0, 0, 0], [0, 0, 1]]), 3),
        ("a 2 x 2 x 2 block, k=3", block, 3),
        ("a 2 x 2 x 2 block in reverse order, k=3", block.flip(0), 3),
        ("voxels too far apart to meet, k=3", torch.tensor([[0, 0, 0], [2, 0, 0], [0, 5, 0]]), 3),
        ("negative coordinates, k=3", torch.tensor([[-3, -1, 0], [-2, -1, 0], [-2, 0, 1]]), 3),
        ("a voxelised sphere, k=3", sphere, 3),
        ("a voxelised torus, k=5", torus, 5),
    ]
    return [Case(label, (coords, k)) for label, coords, k in clouds]


def _hidden_kernel_map(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(-4, 5, (40, 3), generator=generator), dim=0)
    return [Case("random voxels in a 9^3 box, k=3", (coords, 3))]


KERNEL_MAP = Check(
    name="kernel_map",
    reference=_reference_pairs,
    cases=_kernel_map_cases,
    hidden=_hidden_kernel_map,
    observe=_kernel_map_observation,
    compare=exact,
    replaces=("labkit.hardware.sparseconv.build_kernel_map",),
    conventions=("(in that order)", "`(i, o)`", "`coords[i] == coords[o] + d`"),
)


def _lockstep_pair(lockstep_cycles, case: Case) -> tuple:
    """The ``(cycles, work)`` pair the function returns, as a tuple (a list is a pair too)."""
    result = lockstep_cycles(*case.args)
    return tuple(result) if isinstance(result, list) else result


def _lockstep_reference(encoded: eie.EIEMatrix, activations: torch.Tensor) -> tuple:
    report = eie.simulate_spmv(encoded, activations)
    return report.cycles, report.work_per_pe


def _relu_vector(length: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(length, generator=generator).clamp(min=0)


def _integer_matrix(rows: int, columns: int, density: float,
                    generator: torch.Generator) -> torch.Tensor:
    """A matrix of small integers (exact codebook values), ``density`` of them non-zero."""
    matrix = torch.randint(1, 10, (rows, columns), generator=generator).float()
    matrix[torch.rand(rows, columns, generator=generator) > density] = 0
    return matrix


def _lockstep_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    small = _integer_matrix(8, 8, 0.35, generator)
    tall = torch.zeros(40, 3)
    tall[[0, 37], 0], tall[[5, 39], 1], tall[20, 2] = 2.0, 3.0, 4.0
    uneven = torch.zeros(8, 4)
    uneven[:, 0], uneven[0, 1:] = 1.0, 5.0
    random_matrix = _integer_matrix(32, 24, 0.2, generator)
    settings = [
        ("8 x 8 on 4 PEs, every activation non-zero", small, 4, torch.ones(8)),
        ("zero activations are not broadcast", small, 4,
         torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 1.0, 0.0])),
        ("all activations zero: no cycles", small, 4, torch.zeros(8)),
        ("one PE: padding entries cost cycles too", tall, 1, torch.ones(3)),
        ("every row of column 0 on 4 PEs, one busy PE for the rest", uneven, 4, torch.ones(4)),
        ("3 PEs, rows not a multiple of 3", small, 3, torch.arange(8.0)),
        ("random 32 x 24 on 8 PEs, ReLU activations", random_matrix, 8,
         _relu_vector(24, generator)),
    ]
    return [Case(label, (eie.encode_eie(weight, pes), x)) for label, weight, pes, x in settings]


def _hidden_lockstep(seed: int) -> list[Case]:
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for pes in (2, 5):
        weight = _integer_matrix(20, 16, 0.3, generator)
        cases.append(Case(f"random 20 x 16 on {pes} PEs",
                          (eie.encode_eie(weight, pes), _relu_vector(16, generator))))
    return cases


LOCKSTEP_CYCLES = Check(
    name="lockstep_cycles",
    reference=_lockstep_reference,
    cases=_lockstep_cases,
    hidden=_hidden_lockstep,
    observe=_lockstep_pair,
    compare=close(),
    replaces=("labkit.hardware.eie.simulate_spmv",),
    conventions=("an integer", "`torch.int64`", "padding entries included", "entry per PE"),
)
