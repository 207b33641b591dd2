"""The exercise checks the labs call: ``checks.check_<name>(function)``.

Each check is declared once as data (:class:`~labkit.grading.checks.core.Check`) in the
module of its concept; :data:`CHECKS` maps the function a lab calls to its declaration,
which the grader's referee reads too. See :mod:`labkit.grading.checks.core` for the two
modes (practice and grading).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labkit.grading.checks import (
    amc,
    channels,
    criteria,
    granularity,
    hardware,
    llm,
    measure,
    residual,
    schedule,
    sensitivity,
)
from labkit.grading.checks.core import (
    Case,
    Check,
    CheckError,
    CheckFailed,
    needs,
    run,
)

__all__ = ["CHECKS", "Case", "Check", "CheckError", "CheckFailed", "needs", "run"]

CHECKS: dict[str, Check] = {}


def register(check: Check, called: str | None = None) -> Callable[[Any], None]:
    """Add ``check`` to :data:`CHECKS` as ``called`` (default ``check_<name>``) and
    return the function of that name the labs call."""

    def check_function(function: Any) -> None:
        run(check, function)

    check_function.__name__ = check_function.__qualname__ = called or f"check_{check.name}"
    check_function.__doc__ = f"Check the student's ``{check.name}`` (see {check.name!r})."
    CHECKS[check_function.__name__] = check
    return check_function


check_get_sparsity = register(measure.GET_SPARSITY)
check_get_model_size = register(measure.GET_MODEL_SIZE)
check_fine_grained_mask = register(granularity.FINE_GRAINED_MASK)
check_nm_mask = register(granularity.NM_MASK)
check_row_norm = register(criteria.ROW_NORM)
check_hessian_diagonal = register(criteria.HESSIAN_DIAGONAL)
check_obd_importance = register(criteria.OBD_IMPORTANCE)
check_slimming_penalty = register(criteria.SLIMMING_PENALTY)
check_apoz = register(channels.APOZ)
check_get_num_channels_to_keep = register(channels.GET_NUM_CHANNELS_TO_KEEP)
check_input_channel_importance = register(channels.INPUT_CHANNEL_IMPORTANCE,
                                          "check_input_channel_importance")
check_channel_sorting = register(channels.CHANNEL_SORTING, "check_channel_sorting")
check_limit_ratio = register(amc.LIMIT_RATIO)
_policy_budget = register(amc.POLICY_BUDGET, "check_policy_budget")
check_agp_sparsity = register(schedule.AGP_SPARSITY)
check_iterative_prune = register(schedule.ITERATIVE_PRUNE)
check_relative_index_encode = register(hardware.RELATIVE_INDEX_ENCODE)
check_pack_2_4_metadata = register(hardware.PACK_2_4_METADATA)
check_kernel_map = register(hardware.KERNEL_MAP)
check_lockstep_cycles = register(hardware.LOCKSTEP_CYCLES)
check_scan_layer = register(sensitivity.SCAN_LAYER)
check_wanda_mask = register(llm.WANDA_MASK)
check_obs_update = register(llm.OBS_UPDATE)
check_nm_score_mask = register(llm.NM_SCORE_MASK)
check_residual_groups = register(residual.RESIDUAL_GROUPS)
check_reader_importance = register(residual.READER_IMPORTANCE)
_sparsity_budget = register(sensitivity.SPARSITY_BUDGET, "check_sparsity_budget")


def check_sparsity_budget(sparsities: Any, model: Any = None,
                          budget: float = sensitivity.SIZE_BUDGET) -> None:
    """Lab 04: a sparsity in [0, 1) for every prunable layer of the lab's model, its
    size with a bitmask index within the graded budget of the dense size, and its
    validation accuracy after the check's fixed finetune at or above the bar.
    ``sparsities`` is the dict, or the student's function that returns it."""
    if budget != sensitivity.SIZE_BUDGET:
        raise CheckFailed(f"sparsity_budget: the graded budget is {sensitivity.SIZE_BUDGET}, "
                          f"got budget={budget!r}")
    _sparsity_budget(sparsities if callable(sparsities) else lambda: sparsities)


def check_policy_budget(ratios: Any) -> None:
    """Lab 05: one pruning ratio per conv of the lab's VGG, within the graded MAC budget
    and at or above the accuracy bar without finetuning. ``ratios`` is the list, or the
    student's function that returns it."""
    _policy_budget(ratios if callable(ratios) else lambda: ratios)
