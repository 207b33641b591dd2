"""Tests of the lab 07 checks: EIE relative indices, 2:4 metadata, kernel maps."""

import pytest
import torch

from labkit.grading import checks
from labkit.hardware import eie, nm, sparseconv
from tests.support.hardware_solutions import (
    encode_with_divmod,
    kernel_map_broadcast,
    metadata_loops,
)


def reference_metadata(weight):
    return nm.compress_2_4(weight).metadata


def reference_kernel_map(coords, kernel_size):
    return sparseconv.build_kernel_map(coords, kernel_size).pairs


def test_correct_functions_pass_with_one_line_each(capsys):
    checks.check_relative_index_encode(encode_with_divmod)
    checks.check_pack_2_4_metadata(metadata_loops)
    checks.check_kernel_map(kernel_map_broadcast)
    assert capsys.readouterr().out.splitlines() == [
        "relative_index_encode: 11/11 cases passed",
        "pack_2_4_metadata: 9/9 cases passed",
        "kernel_map: 9/9 cases passed",
    ]


def test_encoding_without_padding_entries_fails_on_a_long_run():
    def no_padding(codes):
        rows = torch.nonzero(codes).flatten()
        previous = torch.cat([torch.tensor([-1]), rows[:-1]])
        return codes[rows].to(torch.uint8), (rows - previous - 1).to(torch.uint8)

    with pytest.raises(checks.CheckFailed, match=r"3 at row 2.*expected shape \(2, 4\), got "
                                                 r"shape \(2, 3\)"):
        checks.check_relative_index_encode(no_padding)


def test_encoding_with_wrong_dtype_fails():
    def as_int64(codes):
        return tuple(part.long() for part in eie.relative_index_encode(codes))

    with pytest.raises(checks.CheckFailed, match="expected dtype torch.uint8, got dtype "
                                                 "torch.int64"):
        checks.check_relative_index_encode(as_int64)


def test_metadata_with_positions_in_high_bits_first_fails():
    def high_bits_first(weight):
        metadata = reference_metadata(weight)
        reversed_fields = [(metadata >> shift) & 3 for shift in (6, 4, 2, 0)]
        return sum(field << (2 * slot) for slot, field in enumerate(reversed_fields)).to(
            torch.uint8
        )

    with pytest.raises(checks.CheckFailed, match="case 'one group, kept at 1 and 3' failed"):
        checks.check_pack_2_4_metadata(high_bits_first)


def test_kernel_map_pairs_may_come_in_any_order(capsys):
    def shuffled(coords, kernel_size):
        return [pairs.flip(0) for pairs in reference_kernel_map(coords, kernel_size)]

    checks.check_kernel_map(shuffled)
    assert capsys.readouterr().out == "kernel_map: 9/9 cases passed\n"


def test_kernel_map_with_inputs_and_outputs_swapped_fails():
    def swapped(coords, kernel_size):
        return [pairs.flip(1) for pairs in reference_kernel_map(coords, kernel_size)]

    with pytest.raises(checks.CheckFailed, match="two neighbours along z"):
        checks.check_kernel_map(swapped)


def test_kernel_map_missing_offsets_fails():
    def centre_only(coords, kernel_size):
        pairs = reference_kernel_map(coords, kernel_size)
        return [pairs[len(pairs) // 2]]

    with pytest.raises(checks.CheckFailed, match="one voxel, k=3"):
        checks.check_kernel_map(centre_only)


@pytest.mark.parametrize(
    "check",
    [checks.check_relative_index_encode, checks.check_pack_2_4_metadata, checks.check_kernel_map],
)
def test_not_a_function(check):
    with pytest.raises(checks.CheckFailed, match="expected a function, got float"):
        check(0.5)


def test_unimplemented_exercise_says_so(capsys):
    def todo(*args):
        raise NotImplementedError()

    checks.check_kernel_map(todo)
    assert capsys.readouterr().out.startswith("kernel_map: not done yet")
