"""Pruning the linear layers of a transformer language model: magnitude, Wanda, SparseGPT.

A language model is pruned one linear layer ``y = W x`` at a time, without retraining.
Each method gives a keep-mask for ``W`` (``out x in``); SparseGPT also changes the weights
that stay:

* **Magnitude**: prune the smallest ``|W_ij|``, within the whole layer or within each
  output row (Han et al. 2015).
* **Wanda** (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
  Models"): score ``S_ij = |W_ij| * ||X_j||_2``, where ``||X_j||_2`` is the L2 norm of input
  feature ``j`` over every calibration token, compared **within each output row**; no
  weight update.
* **SparseGPT** (Frantar and Alistarh 2023, "SparseGPT: Massive Language Models Can Be
  Accurately Pruned in One-Shot"): with ``H = 2 X X^T / n`` the Hessian of the layer's
  reconstruction error ``||W X - W' X||^2``, columns are visited left to right; each
  pruned weight's error is spread over the not yet visited columns by the optimal brain
  surgeon (OBS) update, read off the upper Cholesky factor of ``H^-1``.

Masks are unstructured (a ``sparsity`` in ``[0, 1)``) or N:M (``nm=(2, 4)``: 2 kept in
every 4 consecutive inputs, the pattern of sparse Tensor Cores). :func:`prune` prunes a
whole model **sequentially**, in one of two modes (:data:`SEQUENTIAL`):

* ``"block"``, as the reference code of both papers (IST-DASLab/sparsegpt,
  locuslab/wanda): one forward pass through a transformer block that is still dense, on the
  outputs of the blocks already pruned, records the inputs of every linear layer of the
  block; all of them are pruned; the next block's inputs are then those of the pruned block.
* ``"layer"``, finer: each layer's inputs are recorded anew, through the model whose earlier
  layers, those of its own block included, are already pruned.

Embeddings and the output head stay dense by default. :func:`sweep` prunes a model under
several criteria, targets and calibration sets and returns the perplexities as one table.

Training the dense model and its perplexity live in :mod:`labkit.training`.
"""

from __future__ import annotations

import copy
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from labkit.pruning.granularity import mask_from_scores, nm_mask
from labkit.training import perplexity
from labkit.validation import (
    check_count,
    check_names,
    check_real,
    check_seed,
    check_sparsity,
)

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("magnitude", "wanda", "sparsegpt")
"""The pruning criteria :func:`prune` knows."""

GROUPS = ("row", "layer")
"""Where magnitude compares its scores: within each output row, or within the layer."""

SEQUENTIAL = ("layer", "block")
"""How :func:`prune` recalibrates: after every layer, or after every transformer block."""

CRITERIA: dict[str, dict[str, str]] = {
    "magnitude (layer)": {"method": "magnitude", "group": "layer"},
    "magnitude (row)": {"method": "magnitude", "group": "row"},
    "wanda": {"method": "wanda"},
    "sparsegpt": {"method": "sparsegpt"},
}
"""The criteria :func:`sweep` compares, by name: magnitude ranked across the whole layer
(the baseline of both papers, locuslab/wanda's ``prune_magnitude``) and within each output
row (Wanda's comparison group with the activations left out), Wanda and SparseGPT."""

DAMPING = 0.01
"""SparseGPT's dampening: ``H + DAMPING * mean(diag(H)) * I`` (1% in the paper)."""

BLOCK_SIZE = 128
"""SparseGPT's column block: lazy updates and mask selection (128 in the paper)."""


# --- the layers and their calibration inputs ------------------------------------------

def linear_layers(model: nn.Module, skip: Sequence[str] = ("head",)) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers of ``model`` in definition order, except those named in
    ``skip`` (the output head, tied to the embedding, by default)."""
    layers = {name: module for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and name not in skip}
    if not layers:
        raise ValueError(f"model must have an nn.Linear layer to prune (skipping {tuple(skip)}), "
                         f"found none in {type(model).__name__}")
    return layers


def check_calibration(model: nn.Module, calibration: torch.Tensor) -> None:
    """``calibration`` must be ``(samples, length)`` token ids, at least one sample and
    ``length >= model.context``."""
    if not isinstance(calibration, torch.Tensor) or calibration.dtype != torch.int64:
        raise TypeError("calibration must be an int64 tensor of token ids, got "
                        f"{getattr(calibration, 'dtype', type(calibration).__name__)}")
    if calibration.dim() != 2:
        raise ValueError(f"calibration must be 2-D (samples, length), got shape "
                         f"{tuple(calibration.shape)}")
    samples, length = calibration.shape
    if samples == 0:
        raise ValueError("calibration must hold at least one sample, got an empty set")
    if length < model.context:
        raise ValueError(f"calibration samples must hold at least the model's context of "
                         f"{model.context} tokens, got {length}")


@dataclass
class InputStatistics:
    """What pruning needs to know about a layer's inputs ``X`` (``in x n``, one column per
    calibration token): ``gram = X X^T`` and the token count ``n``."""

    gram: torch.Tensor
    count: int

    @property
    def hessian(self) -> torch.Tensor:
        """``H = 2 X X^T / n``, the Hessian of the mean squared reconstruction error."""
        return 2.0 * self.gram / self.count

    @property
    def norms(self) -> torch.Tensor:
        """``||X_j||_2`` of every input feature ``j`` over all tokens (Wanda)."""
        return self.gram.diagonal().sqrt()


class _StopForward(Exception):
    """Raised by the recording hook: nothing after the layer is needed."""


def input_statistics(model: nn.Module, layer: str, calibration: torch.Tensor,
                     batch_size: int = 64) -> InputStatistics:
    """:class:`InputStatistics` of the inputs to ``model``'s layer named ``layer`` on the
    first ``model.context`` tokens of each calibration sample (each batch's ``X X^T`` in
    float32, summed in float64)."""
    return layer_inputs(model, [layer], calibration, batch_size)[layer]


@torch.no_grad()
def layer_inputs(model: nn.Module, layers: Sequence[str], calibration: torch.Tensor,
                 batch_size: int = 64) -> dict[str, InputStatistics]:
    """:func:`input_statistics` of several layers from one pass of each batch, stopped
    once every named layer has received its input (layers run as they are now: a layer
    that runs after another one of ``layers`` sees that one's present weights)."""
    check_calibration(model, calibration)
    modules = dict(model.named_modules())
    for name in layers:
        if not isinstance(modules.get(name), nn.Linear):
            raise ValueError(f"layer must name an nn.Linear of the model, got {name!r}")
    size = {name: modules[name].in_features for name in layers}
    grams = {name: torch.zeros(size[name], size[name], dtype=torch.float64) for name in layers}
    counts = dict.fromkeys(layers, 0)
    pending: set[str] = set()

    def recorder(name):
        def record(_module, inputs):
            x = inputs[0].detach().reshape(-1, size[name]).float().cpu()
            grams[name] += (x.T @ x).double()
            counts[name] += x.shape[0]
            pending.discard(name)
            if not pending:
                raise _StopForward
        return record

    handles = [modules[name].register_forward_pre_hook(recorder(name)) for name in layers]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in calibration[:, :model.context].split(batch_size):
            pending.update(layers)
            try:
                model(batch.to(device))
            except _StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: InputStatistics(grams[name], counts[name]) for name in layers}


# --- scores and masks: pure functions of tensors --------------------------------------

def _check_matrix(value: torch.Tensor, argument: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{argument} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2:
        raise ValueError(f"{argument} must be 2-D (out x in), got shape {tuple(value.shape)}")


def wanda_score(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """Wanda's importance ``S_ij = |W_ij| * ||X_j||_2`` (Sun et al. 2023, eq. 1).

    ``input_norms[j]``: the L2 norm of input feature ``j`` over all calibration tokens.
    """
    _check_matrix(weight, "weight")
    if input_norms.shape != (weight.shape[1],):
        raise ValueError(f"input_norms must have shape ({weight.shape[1]},) to match weight "
                         f"{tuple(weight.shape)}, got {tuple(input_norms.shape)}")
    return weight.detach().abs() * input_norms.to(weight.dtype)[None, :]


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning ``round(in * sparsity)`` lowest scores in **every output row**.

    Wanda's comparison group: each output neuron loses the same fraction of its inputs.
    Ties keep the lower column index (a stable sort).
    """
    _check_matrix(scores, "scores")
    check_sparsity(sparsity)
    num_keep = scores.shape[1] - round(scores.shape[1] * sparsity)
    ranking = torch.sort(scores.detach(), dim=1, descending=True, stable=True).indices
    keep = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    return keep.scatter_(1, ranking[:, :num_keep], True)


def wanda_mask(weight: torch.Tensor, input_norms: torch.Tensor,
               sparsity: float) -> torch.Tensor:
    """Wanda's keep-mask: :func:`row_mask` of :func:`wanda_score` (Sun et al. 2023)."""
    return row_mask(wanda_score(weight, input_norms), sparsity)


def nm_score_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M keep-mask from non-negative ``scores`` (``out x in``): in every group of ``m``
    consecutive inputs of a row, keep the ``n`` highest (ties keep the lower index)."""
    _check_matrix(scores, "scores")
    _check_nm((n, m), scores.shape[1])
    if (scores < 0).any():
        raise ValueError("scores must be non-negative (an importance), got a minimum of "
                         f"{float(scores.min()):g}")
    return nm_mask(scores, n, m)


def _check_nm(nm: tuple[int, int], in_features: int | None = None, where: str = "") -> None:
    if not (isinstance(nm, tuple) and len(nm) == 2):
        raise TypeError(f"nm must be a pair (n, m) such as (2, 4), got {nm!r}")
    n, m = nm
    check_count(m, "m of nm")
    check_count(n, "n of nm", minimum=0)
    if n > m:
        raise ValueError(f"nm=(n, m) must keep n <= m weights of every m, got {nm}")
    if in_features is not None and in_features % m:
        raise ValueError(f"nm={nm}: m={m} must divide the input size in_features="
                         f"{in_features}{where}")


def check_target(sparsity: float | None, nm: tuple[int, int] | None) -> None:
    """Exactly one of an unstructured ``sparsity`` in ``[0, 1)`` and an N:M pattern."""
    if (sparsity is None) == (nm is None):
        raise ValueError("give exactly one of sparsity (unstructured) and nm (N:M), got "
                         f"sparsity={sparsity!r}, nm={nm!r}")
    if sparsity is not None:
        check_sparsity(sparsity)
    else:
        _check_nm(nm)


def mask(scores: torch.Tensor, *, sparsity: float | None = None,
         nm: tuple[int, int] | None = None, group: str = "row") -> torch.Tensor:
    """Keep-mask from ``scores`` (``out x in``): the lowest ``sparsity`` of each ``group``
    (``"row"`` or ``"layer"``) pruned, or the ``n`` highest of every ``m`` consecutive
    inputs kept (``nm=(n, m)``)."""
    _check_matrix(scores, "scores")
    check_target(sparsity, nm)
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if nm is not None:
        return nm_score_mask(scores, *nm)
    if group == "row":
        return row_mask(scores, sparsity)
    return mask_from_scores(scores, sparsity)


# --- SparseGPT ------------------------------------------------------------------------

def _check_damping(damping: float) -> None:
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or not damping > 0:
        raise ValueError(f"damping must be a positive fraction of mean(diag(H)) such as "
                         f"{DAMPING}, got {damping!r}")


def _check_hessian(weight: torch.Tensor, hessian: torch.Tensor, damping: float) -> None:
    _check_matrix(weight, "weight")
    columns = weight.shape[1]
    if not isinstance(hessian, torch.Tensor) or hessian.shape != (columns, columns):
        raise ValueError(f"hessian must be a ({columns}, {columns}) tensor for weight "
                         f"{tuple(weight.shape)}, got {tuple(getattr(hessian, 'shape', ()))}")
    _check_damping(damping)


def inverse_hessian_factor(hessian: torch.Tensor, damping: float = DAMPING) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + lambda I)^-1 = U^T U``, ``lambda = damping *
    mean(diag(H))``, in float64; an input that was always zero gets ``H_jj = 1``.

    Row ``q`` of ``U`` holds what the OBS update needs once columns ``< q`` are fixed:
    ``U[q, q]^2`` is ``[H_F^-1]_qq`` and ``U[q, q:] / U[q, q]`` the update direction
    (SparseGPT, section 3.2).
    """
    _check_damping(damping)
    h = hessian.detach().double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    h += damping * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True)


def _obs_error(w: torch.Tensor, keep: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """``(w - q) / U_cc``: the pruned entries of column ``w`` over its factor diagonal."""
    return torch.where(keep, torch.zeros_like(w), w) / diagonal


def obs_update(weight: torch.Tensor, factor: torch.Tensor, column: int,
               keep: torch.Tensor) -> torch.Tensor:
    """Prune ``column`` of ``weight`` where ``keep`` (one flag per row) is False, and
    compensate on the columns after it by the optimal brain surgeon update:

    ``err = (w - q) / U[c, c]``, ``W[:, c:] -= err U[c, c:]``, where ``w = W[:, c]``, ``q``
    is ``w`` with the pruned entries zeroed and ``U`` the :func:`inverse_hessian_factor`.
    Column ``c`` becomes exactly ``q``; columns before it are unchanged. Returns a new tensor.
    """
    w = weight[:, column]
    error = _obs_error(w, keep, factor[column, column])
    updated = weight.clone()
    updated[:, column:] -= error[:, None] * factor[column, column:][None, :]
    updated[:, column] = torch.where(keep, w, torch.zeros_like(w))
    return updated


def _sparsegpt_block_mask(weight: torch.Tensor, factor: torch.Tensor, start: int,
                          stop: int, sparsity: float) -> torch.Tensor:
    """Unstructured mask of columns ``start:stop``: prune the lowest ``w^2 / U_qq^2``
    of the whole block (SparseGPT's adaptive mask selection)."""
    scores = weight[:, start:stop] ** 2 / factor.diagonal()[start:stop][None, :] ** 2
    return mask_from_scores(scores, sparsity)


def _sparsegpt_group_mask(weight: torch.Tensor, factor: torch.Tensor, start: int,
                          nm: tuple[int, int]) -> torch.Tensor:
    """N:M mask of columns ``start:start + m``: keep the ``n`` highest ``w^2 / U_qq^2``."""
    n, m = nm
    scores = weight[:, start:start + m] ** 2 / factor.diagonal()[start:start + m][None, :] ** 2
    return nm_score_mask(scores, n, m)


def _check_sparsegpt(weight, hessian, sparsity, nm, block_size, damping) -> None:
    _check_hessian(weight, hessian, damping)
    check_target(sparsity, nm)
    check_count(block_size, "block_size")
    if nm is not None:
        _check_nm(nm, weight.shape[1])
        if block_size % nm[1]:
            raise ValueError(f"block_size must be a multiple of m={nm[1]} for nm={nm}, "
                             f"got {block_size}")


def sparsegpt(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    block_size: int = BLOCK_SIZE,
    damping: float = DAMPING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar and Alistarh 2023, Algorithm 1): the pruned, updated weight and
    its keep-mask.

    Columns are processed in blocks of ``block_size``. Unstructured: at the start of each
    block, the ``sparsity`` fraction of its weights with the lowest ``w^2 / U_qq^2`` is
    pruned (U from :func:`inverse_hessian_factor`); N:M: at every ``m``-th column, the
    lowest ``m - n`` of the next ``m`` in each row. Within a block, each column gets its
    :func:`obs_update`, restricted to the block; the errors are gathered, and the columns
    after the block get them all at once, ``W[:, b:] -= E U[block, b:]`` (lazy batch
    updates: one matrix product per block instead of one rank-1 update per column).
    Equal to :func:`sparsegpt_reference` up to rounding.
    """
    _check_sparsegpt(weight, hessian, sparsity, nm, block_size, damping)
    factor = inverse_hessian_factor(hessian, damping)
    w = weight.detach().double().clone()
    w[:, hessian.diagonal() == 0] = 0.0
    keep = torch.ones(w.shape, dtype=torch.bool)
    columns = w.shape[1]
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block, block_factor = w[:, start:stop].clone(), factor[start:stop, start:stop]
        errors = torch.zeros_like(block)
        if sparsity is not None:
            keep[:, start:stop] = _sparsegpt_block_mask(block, block_factor, 0, stop - start,
                                                         sparsity)
        for i in range(stop - start):
            if nm is not None and i % nm[1] == 0:
                keep[:, start + i:start + i + nm[1]] = _sparsegpt_group_mask(
                    block, block_factor, i, nm)
            errors[:, i] = _obs_error(block[:, i], keep[:, start + i], block_factor[i, i])
            block = obs_update(block, block_factor, i, keep[:, start + i])
        w[:, start:stop] = block
        w[:, stop:] -= errors @ factor[start:stop, stop:]
    return w.to(weight.dtype), keep


def sparsegpt_reference(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    mask_block: int = BLOCK_SIZE,
    damping: float = DAMPING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT column by column, with no lazy updates: for each column ``c``, choose the
    mask (every ``mask_block`` columns, or every ``m``), then :func:`obs_update` of the
    whole weight. Slow and plain; the test of :func:`sparsegpt`."""
    _check_sparsegpt(weight, hessian, sparsity, nm, mask_block, damping)
    factor = inverse_hessian_factor(hessian, damping)
    w = weight.detach().double().clone()
    w[:, hessian.diagonal() == 0] = 0.0
    keep = torch.ones(w.shape, dtype=torch.bool)
    for column in range(w.shape[1]):
        if sparsity is not None and column % mask_block == 0:
            stop = min(column + mask_block, w.shape[1])
            keep[:, column:stop] = _sparsegpt_block_mask(w, factor, column, stop, sparsity)
        if nm is not None and column % nm[1] == 0:
            keep[:, column:column + nm[1]] = _sparsegpt_group_mask(w, factor, column, nm)
        w = obs_update(w, factor, column, keep[:, column])
    return w.to(weight.dtype), keep


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor,
                         hessian: torch.Tensor) -> float:
    """Mean squared output error ``||W X - W' X||^2_F / n = tr(D H D^T) / 2``,
    ``D = W - W'``, ``H = 2 X X^T / n``: what SparseGPT minimises layer by layer."""
    difference = (weight.detach() - pruned.detach()).double()
    return float(0.5 * (difference @ hessian.double() * difference).sum())


# --- a whole model --------------------------------------------------------------------

@dataclass
class PrunedModel:
    """The pruned copy of a model, each layer's keep-mask and calibration reconstruction
    error (:func:`reconstruction_error` on that layer's sequential calibration inputs),
    and the wall time of pruning."""

    model: nn.Module
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def prune_layer(weight: torch.Tensor, statistics: InputStatistics, method: str, *,
                sparsity: float | None = None, nm: tuple[int, int] | None = None,
                group: str = "row", block_size: int = BLOCK_SIZE,
                damping: float = DAMPING) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's pruned weight and keep-mask by ``method`` (one of :data:`METHODS`).

    ``group`` says where magnitude compares (Wanda always compares within a row, SparseGPT
    within its column blocks); ``block_size`` and ``damping`` are SparseGPT's.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_target(sparsity, nm)
    if method == "sparsegpt":
        return sparsegpt(weight, statistics.hessian, sparsity=sparsity, nm=nm,
                         block_size=block_size, damping=damping)
    if method == "wanda" and nm is None:
        keep = wanda_mask(weight, statistics.norms, sparsity)
    elif method == "wanda":
        keep = nm_score_mask(wanda_score(weight, statistics.norms), *nm)
    else:
        keep = mask(weight.detach().abs(), sparsity=sparsity, nm=nm, group=group)
    return weight.detach() * keep, keep


def block_of(layer: str) -> str:
    """The transformer block a layer belongs to: its name up to the first index of a
    module list (``"blocks.1.mlp.fc"`` -> ``"blocks.1"``); a layer outside any list is a
    block of its own."""
    parts = layer.split(".")
    index = next((i for i, part in enumerate(parts) if part.isdigit()), len(parts) - 1)
    return ".".join(parts[:index + 1])


def calibration_groups(layers: Sequence[str], sequential: str) -> list[list[str]]:
    """The layers whose inputs are recorded in one pass: each layer alone
    (``"layer"``), or every layer of one :func:`block_of` (``"block"``), in order."""
    if sequential not in SEQUENTIAL:
        raise ValueError(f"sequential must be one of {SEQUENTIAL}, got {sequential!r}")
    if sequential == "layer":
        return [[name] for name in layers]
    groups: dict[str, list[str]] = {}
    for name in layers:
        groups.setdefault(block_of(name), []).append(name)
    return list(groups.values())


@torch.no_grad()
def prune(
    model: nn.Module,
    calibration: torch.Tensor,
    method: str,
    *,
    sparsity: float | None = None,
    nm: tuple[int, int] | None = None,
    group: str = "row",
    skip: Sequence[str] = ("head",),
    sequential: str = "layer",
    block_size: int = BLOCK_SIZE,
    damping: float = DAMPING,
) -> PrunedModel:
    """Prune every linear layer of a copy of ``model`` (``model`` is not changed).

    Layers are pruned in order. Their :func:`input_statistics` are taken on
    ``calibration`` (``(samples, length)`` training token ids, ``length >= context``)
    through the copy as pruned so far: anew before every layer (``sequential="layer"``),
    or once per transformer block for all of its layers (``"block"``, as the papers'
    code; see the module's docstring). Layers named in ``skip`` (the tied output head)
    and the embeddings stay dense.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_target(sparsity, nm)
    check_calibration(model, calibration)
    _check_damping(damping)
    layers = linear_layers(model, skip)
    groups = calibration_groups(list(layers), sequential)
    if nm is not None:
        for name, layer in layers.items():
            _check_nm(nm, layer.in_features, f" of layer {name}")
    start = time.perf_counter()
    pruned = copy.deepcopy(model).eval()
    result = PrunedModel(pruned)
    for names in groups:
        statistics = layer_inputs(pruned, names, calibration)
        for name in names:
            layer = pruned.get_submodule(name)
            dense = layer.weight.detach().clone()
            weight, keep = prune_layer(dense, statistics[name], method, sparsity=sparsity,
                                       nm=nm, group=group, block_size=block_size,
                                       damping=damping)
            layer.weight.copy_(weight)
            result.masks[name] = keep
            result.errors[name] = reconstruction_error(dense, weight, statistics[name].hessian)
    result.seconds = time.perf_counter() - start
    return result


# --- experiments: a sweep, and outlier features ---------------------------------------

def target_label(target: float | tuple[int, int]) -> str:
    """``0.5`` -> ``"50%"``, ``(2, 4)`` -> ``"2:4"``."""
    _target_options(target)
    return f"{target[0]}:{target[1]}" if isinstance(target, tuple) else f"{target:.0%}"


def _target_options(target: float | tuple[int, int]) -> dict:
    options = {"nm": target} if isinstance(target, tuple) else {"sparsity": target}
    check_target(options.get("sparsity"), options.get("nm"))
    return options


def sweep(
    model: nn.Module,
    calibrations: Mapping[int, torch.Tensor],
    evaluation: Mapping[str, torch.Tensor],
    *,
    criteria: Sequence[str] = tuple(CRITERIA),
    targets: Sequence[float | tuple[int, int]] = (0.5, (2, 4)),
    sequential: str = "layer",
) -> pd.DataFrame:
    """Prune ``model`` by every criterion (names of :data:`CRITERIA`) at every target
    (a sparsity or an N:M pair) with every calibration set, and measure each copy.

    ``calibrations``: calibration token ids by the seed that drew them;
    ``evaluation``: windows (``(count, length + 1)`` token ids) by split name. One row per
    criterion, target and seed: ``criterion``, ``target`` (``"50%"``, ``"2:4"``),
    ``seed``, ``sequential``, ``seconds`` of pruning, the perplexity on each split
    (``"<split> perplexity"``) and each layer's calibration reconstruction error (a column
    per layer). Magnitude's masks do not depend on the calibration, so its copies are
    evaluated once per target and their perplexities repeated for every seed.
    """
    import pandas as pd  # imported on use: the grader's processes import this module

    if not calibrations or not evaluation:
        raise ValueError("calibrations and evaluation must each hold at least one entry, got "
                         f"{len(calibrations)} and {len(evaluation)}")
    for name in criteria:
        if name not in CRITERIA:
            raise ValueError(f"criteria must be names of {tuple(CRITERIA)}, got {name!r}")
    options = {target_label(target): _target_options(target) for target in targets}
    rows, measured = [], {}
    for criterion in criteria:
        for label, target in options.items():
            for seed, calibration in calibrations.items():
                result = prune(model, calibration, **CRITERIA[criterion], **target,
                               sequential=sequential)
                key = (criterion, label, seed if CRITERIA[criterion]["method"] != "magnitude"
                       else None)
                if key not in measured:
                    measured[key] = {f"{split} perplexity": perplexity(result.model, windows)
                                     for split, windows in evaluation.items()}
                rows.append({"criterion": criterion, "target": label,
                             "seed": check_seed(seed), "sequential": sequential,
                             "seconds": result.seconds, **measured[key], **result.errors})
    return pd.DataFrame(rows)


def sweep_calibration_sizes(
    model: nn.Module,
    calibrations: Mapping[int, torch.Tensor],
    evaluation: Mapping[str, torch.Tensor],
    counts: Sequence[int],
    **options,
) -> pd.DataFrame:
    """:func:`sweep` on the first ``count`` windows of every calibration set, for each of
    ``counts``: the rows of all sweeps in one table, with a ``windows`` column.

    Wanda estimates one number per input feature, ``||X_j||_2`` (Sun et al. 2023);
    SparseGPT a whole ``in x in`` Hessian ``H = 2 X X^T / n`` (Frantar and Alistarh 2023),
    which a few windows estimate badly. Each count must be in ``[1, smallest calibration
    set]``; ``options`` (criteria, targets, sequential) go to :func:`sweep`.
    """
    import pandas as pd  # imported on use (see sweep)

    if not calibrations or not counts:
        raise ValueError("calibrations and counts must each hold at least one entry, got "
                         f"{len(calibrations)} and {len(counts)}")
    for calibration in calibrations.values():
        check_calibration(model, calibration)
    available = min(len(calibration) for calibration in calibrations.values())
    for count in counts:
        check_count(count, "counts", maximum=available)
    return pd.concat([sweep(model, {seed: calibration[:count]
                                    for seed, calibration in calibrations.items()},
                            evaluation, **options).assign(windows=count)
                      for count in counts], ignore_index=True)


def ranges(results: pd.DataFrame, by: Sequence[str] = ("target", "criterion")) -> pd.DataFrame:
    """The lowest and highest perplexity over the seeds of a :func:`sweep`, per split
    (columns ``"<split> min"``, ``"<split> max"``), and the mean pruning ``seconds``, for
    every combination of the ``by`` columns (in the order of the sweep)."""
    splits = _perplexity_columns(results)
    bounds = {f"{split.removesuffix(' perplexity')} {bound}": (split, bound)
              for split in splits for bound in ("min", "max")}
    return results.groupby(list(by), sort=False).agg(**bounds, seconds=("seconds", "mean"))


def compare(results: pd.DataFrame, first: str, second: str, *, by: str = "criterion",
            within: Sequence[str] = ("target",)) -> pd.DataFrame:
    """Which of two configurations of a :func:`sweep` has the lower perplexity, counted
    only where the seeds cannot explain the difference.

    ``first`` and ``second`` are values of column ``by``; rows are compared within each
    combination of the ``within`` columns that holds both. For every split (each
    ``"<split> perplexity"`` column), the gap is ``min(second) - max(first)`` over the
    seeds when that is positive (every seed of ``first`` below every seed of ``second``),
    ``max(second) - min(first)`` when that is negative, else 0: the ranges overlap. The
    verdict names the lower one when its gap has one sign on every split, else says
    ``"within the seed spread"``.
    """
    splits = _perplexity_columns(results)
    missing = sorted({by, *within} - set(results.columns))
    if missing:
        raise ValueError(f"by and within must name columns of results, got {missing}; its "
                         f"columns are {list(results.columns)}")
    for value in (first, second):
        if not (results[by] == value).any():
            raise ValueError(f"{by} has no rows of {value!r}; it holds "
                             f"{sorted(results[by].unique())}")
    rows = []
    for key, group in results.groupby(list(within), sort=False):
        a, b = group[group[by] == first], group[group[by] == second]
        if a.empty or b.empty:
            continue
        gaps = {f"{split} gap": _range_gap(a[split], b[split]) for split in splits}
        signs = {(gap > 0) - (gap < 0) for gap in gaps.values()}
        verdict = ("within the seed spread" if len(signs) != 1 or 0 in signs else
                   f"{first if signs == {1} else second} lower")
        rows.append({**dict(zip(within, key, strict=True)), "first": first,
                     "second": second, **gaps, "verdict": verdict})
    import pandas as pd  # imported on use (see sweep)

    return pd.DataFrame(rows)


def layer_errors(results: pd.DataFrame, layers: Sequence[str], *,
                 targets: Sequence[float | tuple[int, int]] | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """Each layer's calibration reconstruction error ``||W X - W' X||^2 / n`` in a
    :func:`sweep`, with the calibration set drawn by ``seed``: a row per layer (index
    ``layer``), a column per target and criterion.

    ``targets`` are sparsities or N:M pairs as :func:`sweep` takes them, in the order the
    columns show them; ``None`` keeps every target of the sweep.
    """
    _perplexity_columns(results)
    names = check_names(layers, "layers")
    missing = sorted(set(names) - set(results.columns))
    if missing:
        raise ValueError(f"layers must name error columns of results, got {missing}")
    rows = results[results["seed"] == seed]
    if rows.empty:
        raise ValueError(f"seed must be one of the sweep's seeds "
                         f"{sorted(results['seed'].unique().tolist())}, got {seed!r}")
    errors = rows.set_index(["target", "criterion"])[list(names)].T.rename_axis("layer")
    if targets is None:
        return errors
    labels = [target_label(target) for target in targets]
    unknown = [label for label in labels if label not in errors.columns.unique("target")]
    if unknown:
        raise ValueError(f"targets must be targets of the sweep "
                         f"{list(errors.columns.unique('target'))}, got {unknown}")
    return errors[labels]


def _perplexity_columns(results: pd.DataFrame) -> list[str]:
    """The ``"<split> perplexity"`` columns of a :func:`sweep` table (at least one)."""
    import pandas as pd  # imported on use (see sweep)

    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a DataFrame from sweep, got {type(results).__name__}")
    columns = [column for column in results.columns if str(column).endswith(" perplexity")]
    if not columns:
        raise ValueError("results must hold a '<split> perplexity' column (a sweep's table), "
                         f"got columns {list(results.columns)}")
    return columns


def _range_gap(first: pd.Series, second: pd.Series) -> float:
    """Positive when all of ``first`` lies below all of ``second``, negative when above,
    0 when the two ranges overlap."""
    if first.max() < second.min():
        return float(second.min() - first.max())
    if second.max() < first.min():
        return float(second.max() - first.min())
    return 0.0


@torch.no_grad()
def outlier_features(model: nn.Module, count: int = 4, scale: float = 20.0,
                     seed: int = 0) -> nn.Module:
    """A copy of a :class:`~labkit.models.GPT` that computes the same function with
    ``count`` outlier input features in every ``attn.qkv`` and ``mlp.fc`` layer.

    The features (drawn with ``seed``, the same in every block) leave each block's
    LayerNorms ``ln1`` and ``ln2`` multiplied by ``scale`` (their weight and bias), and
    the columns of the linear layer reading them are divided by ``scale``:
    ``(W / s)(s x) = W x``. What Wanda's score sees, ``|W_ij| * ||X_j||``, is unchanged;
    magnitude sees weights ``scale`` times smaller (the outliers of Dettmers et al. 2022
    that Sun et al. 2023 designed Wanda for).
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or not all(
            hasattr(block, name) for block in blocks for name in ("ln1", "ln2", "attn", "mlp")):
        raise TypeError("model must be a labkit.models.GPT (blocks of ln1, attn, ln2, mlp), "
                        f"got {type(model).__name__}")
    width = model.blocks[0].ln1.normalized_shape[0]
    check_count(count, "count", maximum=width)
    check_real(scale, "scale", 0.0, low_open=True)
    generator = torch.Generator().manual_seed(check_seed(seed))
    features = torch.randperm(width, generator=generator)[:count]
    scaled = copy.deepcopy(model).eval()
    for block in scaled.blocks:
        for norm, reader in ((block.ln1, block.attn.qkv), (block.ln2, block.mlp.fc)):
            norm.weight[features] *= scale
            norm.bias[features] *= scale
            reader.weight[:, features] /= scale
    return scaled
