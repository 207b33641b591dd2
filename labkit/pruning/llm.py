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
whole model **sequentially**: each layer's calibration inputs come from the model whose
earlier layers are already pruned, as both papers do. Embeddings and the output head stay
dense by default.

Training the dense model and its perplexity live in :mod:`labkit.training`.
"""

from __future__ import annotations

import copy
import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from labkit.pruning.granularity import mask_from_scores, nm_mask
from labkit.validation import check_count, check_sparsity

METHODS = ("magnitude", "wanda", "sparsegpt")
"""The pruning criteria :func:`prune` knows."""

GROUPS = ("row", "layer")
"""Where magnitude compares its scores: within each output row, or within the layer."""

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


@torch.no_grad()
def input_statistics(model: nn.Module, layer: str, calibration: torch.Tensor,
                     batch_size: int = 64) -> InputStatistics:
    """:class:`InputStatistics` of the inputs to ``model``'s layer named ``layer`` on the
    first ``model.context`` tokens of each calibration sample (each batch's ``X X^T`` in
    float32, summed in float64)."""
    check_calibration(model, calibration)
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, nn.Linear):
        raise ValueError(f"layer must name an nn.Linear of the model, got {layer!r}")
    gram = torch.zeros(module.in_features, module.in_features, dtype=torch.float64)
    count = 0

    def record(_module, inputs):
        nonlocal gram, count
        x = inputs[0].detach().reshape(-1, module.in_features).float().cpu()
        gram += (x.T @ x).double()
        count += x.shape[0]
        raise _StopForward

    handle = module.register_forward_pre_hook(record)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in calibration[:, :model.context].split(batch_size):
            try:
                model(batch.to(device))
            except _StopForward:
                pass
    finally:
        handle.remove()
        model.train(was_training)
    return InputStatistics(gram, count)


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
    block_size: int = BLOCK_SIZE,
    damping: float = DAMPING,
) -> PrunedModel:
    """Prune every linear layer of a copy of ``model`` (``model`` is not changed).

    Layers are pruned in order; each one's :func:`input_statistics` are taken on
    ``calibration`` (``(samples, length)`` training token ids, ``length >= context``)
    through the copy whose earlier layers are already pruned. Layers named in ``skip``
    (the tied output head) and the embeddings stay dense.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_target(sparsity, nm)
    check_calibration(model, calibration)
    _check_damping(damping)
    layers = linear_layers(model, skip)
    if nm is not None:
        for name, layer in layers.items():
            _check_nm(nm, layer.in_features, f" of layer {name}")
    start = time.perf_counter()
    pruned = copy.deepcopy(model).eval()
    result = PrunedModel(pruned)
    for name, layer in linear_layers(pruned, skip).items():
        statistics = input_statistics(pruned, name, calibration)
        dense = layer.weight.detach().clone()
        weight, keep = prune_layer(dense, statistics, method, sparsity=sparsity, nm=nm,
                                   group=group, block_size=block_size, damping=damping)
        layer.weight.copy_(weight)
        result.masks[name] = keep
        result.errors[name] = reconstruction_error(dense, weight, statistics.hessian)
    result.seconds = time.perf_counter() - start
    return result
