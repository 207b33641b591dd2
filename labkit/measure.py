"""Measuring a model: sparsity, size, MACs and latency.

* Size counts what a stored model really costs: its ``state_dict``, that is every
  parameter **and every buffer** (BatchNorm's running mean and variance, its batch
  counter). Parameters and floating-point buffers take ``data_width`` bits each; integer
  buffers their own width (64 bits for ``num_batches_tracked``). The weights of prunable
  layers may be stored as only the non-zeros plus the index that says where they are (CSR
  or a bitmask), the overhead the original lab left out.
* MACs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
  2 FLOPs per multiply-accumulate of matrix products and convolutions (``mm``,
  ``addmm``, ``bmm``, ``convolution`` and their kin) and **nothing** for BatchNorm,
  ReLU, pooling or additions; MACs = FLOPs / 2.
* Latency is timed with :mod:`torch.utils.benchmark` (warm-up, a fixed thread count,
  many runs) and reported as the median and inter-quartile range; :func:`time_call`
  times any call so, and every latency in labkit and the labs goes through it (or
  through :func:`fastest_run_ms`, the fastest of single runs, on the same timer).
* :func:`costs` puts parameters, MACs and latencies of a set of models side by side, as
  a pandas DataFrame that :func:`labkit.viz.cost_table` draws.

Prunable layers are ``Conv1d``, ``Conv2d``, ``Conv3d`` and ``Linear``; embeddings are
left dense on purpose. A model with any other layer that owns a weight
(``ConvTranspose2d``, ``Bilinear``, ``MultiheadAttention``, an LSTM, ...) is refused by
name rather than measured or pruned without it, and so is a model whose prunable layers
share (tie) a weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from labkit.validation import (
    check_choice,
    check_count,
    check_layer_types,
    check_module,
    check_real,
    check_seed,
    check_tensor,
)

if TYPE_CHECKING:
    import pandas as pd
    from torch.utils import benchmark

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
DENSE_TYPES = (nn.Embedding, nn.EmbeddingBag)
"""Layers with a weight that pruning leaves dense on purpose (lookup tables)."""
INDEX_FORMATS = (None, "csr", "bitmask")


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers pruning acts on (:data:`PRUNABLE_TYPES`), by qualified name.

    Refuses (``TypeError``) a model with a weight layer of another type, and
    (``ValueError``) one whose prunable layers share a weight tensor.
    """
    check_layer_types(model, PRUNABLE_TYPES, DENSE_TYPES)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    if not layers:
        raise ValueError(
            f"model has no prunable layer: expected at least one of "
            f"{[t.__name__ for t in PRUNABLE_TYPES]} in {type(model).__name__}"
        )
    _check_untied(model, layers)
    return layers


def _check_untied(model: nn.Module, layers: dict[str, nn.Module]) -> None:
    """No weight of ``layers`` may appear in ``model`` under two names."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    for layer in layers.values():
        shared = names.get(id(layer.weight), [])
        if len(shared) > 1:
            raise ValueError(
                f"model ties one weight tensor to {shared}: pruning it through one layer "
                "would prune the others too, and counts would see it twice; give each "
                "layer its own weight (e.g. nn.Parameter(weight.detach().clone()))")


def get_sparsity(tensor: torch.Tensor) -> float:
    """Fraction of zeros: ``#zeros / #elements`` (0 for an empty tensor)."""
    check_tensor(tensor, "tensor", kind="any", finite=False)
    if tensor.numel() == 0:
        return 0.0
    return 1.0 - tensor.count_nonzero().item() / tensor.numel()


def model_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over the weights of all prunable layers."""
    weights = [m.weight for m in prunable_layers(model).values()]
    zeros = sum(w.numel() - w.count_nonzero().item() for w in weights)
    total = sum(w.numel() for w in weights)
    return zeros / total if total else 0.0


def num_parameters(model: nn.Module, count_nonzero_only: bool = False) -> int:
    """Number of parameters, or of non-zero parameters (buffers are not parameters)."""
    check_module(model)
    if count_nonzero_only:
        return sum(p.count_nonzero().item() for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def tensor_size_bits(
    tensor: torch.Tensor,
    data_width: int = 32,
    index: str | None = None,
    index_width: int = 32,
) -> int:
    """Storage of one tensor in bits.

    * ``index=None``: dense, ``numel * data_width``.
    * ``"csr"``: the tensor viewed as a matrix (rows = first dimension), non-zeros
      stored as ``nnz * (data_width + index_width)`` (value + column index) plus
      ``(rows + 1) * index_width`` row pointers.
    * ``"bitmask"``: ``numel`` bits of mask plus ``nnz * data_width``.
    """
    check_tensor(tensor, "tensor", kind="any", finite=False)
    check_count(data_width, "data_width", 1, 64)
    check_count(index_width, "index_width", 1, 64)
    check_choice(index, "index", INDEX_FORMATS)
    nnz = tensor.count_nonzero().item()
    if index is None:
        return tensor.numel() * data_width
    if index == "csr":
        rows = tensor.shape[0] if tensor.dim() > 0 else 1
        return nnz * (data_width + index_width) + (rows + 1) * index_width
    return tensor.numel() + nnz * data_width


def model_size_bits(
    model: nn.Module,
    data_width: int = 32,
    *,
    count_nonzero_only: bool = False,
    index: str | None = None,
    index_width: int = 32,
    buffers: bool = True,
) -> int:
    """Model size in bits: what its ``state_dict`` costs to store.

    Every parameter at ``data_width`` bits, plus (``buffers=True``) every buffer:
    floating-point ones (BatchNorm's running statistics) at ``data_width``, integer ones
    (``num_batches_tracked``) at their own width. ``count_nonzero_only=True`` counts only
    the non-zero parameters, with no index (the original lab's optimistic figure).
    ``index="csr"`` or ``"bitmask"`` stores the weights of prunable layers sparsely with
    that index overhead; other parameters (biases, BatchNorm) stay dense. Buffers are
    always stored dense. ``buffers=False`` counts parameters only.
    """
    check_module(model)
    check_count(data_width, "data_width", 1, 64)
    if count_nonzero_only and index is not None:
        raise ValueError("count_nonzero_only and index exclude each other: pick one")
    buffer_bits = sum(_buffer_bits(b, data_width) for b in model.buffers()) if buffers else 0
    if count_nonzero_only:
        return num_parameters(model, count_nonzero_only=True) * data_width + buffer_bits
    sparse = {id(m.weight) for m in prunable_layers(model).values()} if index else set()
    return buffer_bits + sum(
        tensor_size_bits(p, data_width, index if id(p) in sparse else None, index_width)
        for p in model.parameters()
    )


def _buffer_bits(buffer: torch.Tensor, data_width: int) -> int:
    width = data_width if buffer.is_floating_point() else buffer.element_size() * 8
    return buffer.numel() * width


MiB = 8 * 1024**2
"""Bits in a mebibyte: ``model_size_bits(model) / MiB`` gives MiB."""


@torch.no_grad()
def _count_flops(model: nn.Module, inputs: torch.Tensor) -> FlopCounterMode:
    """Run one forward pass in eval mode under a FlopCounterMode and return the counter."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(inputs)
    model.train(was_training)
    return counter


def count_macs(model: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (FlopCounterMode / 2)."""
    check_module(model)
    check_tensor(inputs, "inputs", kind="any")
    return _count_flops(model, inputs).get_total_flops() // 2


def macs_per_layer(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """MACs of each prunable layer in one forward pass, by qualified name."""
    layers = prunable_layers(model)
    check_tensor(inputs, "inputs", kind="any")
    counts = _count_flops(model, inputs).get_flop_counts()
    prefix = type(model).__name__
    return {
        name: sum(counts.get(f"{prefix}.{name}", {}).values()) // 2
        for name in layers
    }


MAX_RUN_TIME_S = 3600.0
"""The longest measurement :func:`time_call` accepts, in seconds."""


@dataclass(frozen=True)
class Latency:
    """Time of one call in milliseconds: median and inter-quartile range over ``runs``."""

    median_ms: float
    iqr_ms: float
    runs: int
    threads: int

    def __str__(self) -> str:
        return f"{self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f} ms, {self.runs} runs)"


def _timer(call: Callable[[], object], threads: int) -> benchmark.Timer:
    """The :class:`torch.utils.benchmark.Timer` of ``call()`` at ``threads`` threads (it
    waits for CUDA to finish before reading the clock)."""
    check_count(threads, "threads")
    if not callable(call):
        raise TypeError(f"call must be a function of no arguments, got {type(call).__name__}")
    from torch.utils import benchmark  # imported on use: it imports setuptools (0.3 s)

    return benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)


def time_call(call: Callable[[], object], *, threads: int = 1,
              min_run_time: float = 0.5) -> Latency:
    """Time ``call()``: the one timing helper every latency in labkit and the labs uses.

    :meth:`torch.utils.benchmark.Timer.blocked_autorange` warms up, picks a block of
    runs long enough to read the clock precisely and repeats blocks for at least
    ``min_run_time`` seconds in (0, 3600], at a fixed thread count so runs compare.
    Reports the median and the inter-quartile range of the per-run time, and the number
    of runs.
    """
    check_real(min_run_time, "min_run_time", 0.0, MAX_RUN_TIME_S, low_open=True)
    result = _timer(call, threads).blocked_autorange(min_run_time=min_run_time)
    return Latency(median_ms=result.median * 1e3, iqr_ms=result.iqr * 1e3,
                   runs=len(result.times) * result.number_per_run, threads=threads)


def fastest_run_ms(module: nn.Module, inputs: torch.Tensor, *, threads: int = 1,
                   runs: int = 10) -> float:
    """Latency of ``module(inputs)`` in ms: the fastest of ``runs`` single timed runs.

    Two warm-up runs first, then each run timed alone, at a fixed thread count. On a
    shared machine other processes can only *add* time to a run, so the fastest run is
    the least disturbed estimate of what the module itself costs (the median of
    :func:`time_call` mixes the interference in). NetAdapt times its lookup table so.
    """
    check_count(runs, "runs")
    timer = _timer(lambda: module(inputs), threads)
    with torch.no_grad():
        timer.timeit(2)
        return min(timer.timeit(1).median for _ in range(runs)) * 1e3


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    threads: int = 1,
    min_run_time: float = 0.5,
) -> Latency:
    """Latency of ``model(inputs)`` in eval mode and without gradients, by
    :func:`time_call` (median and inter-quartile range)."""
    check_module(model)
    was_training = model.training
    model.eval()
    try:
        return time_call(lambda: model(inputs), threads=threads, min_run_time=min_run_time)
    finally:
        model.train(was_training)


def cost_frame(rows: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Parameters, MACs and latencies of models, each against the first (dense) row.

    ``rows`` maps a model's name to ``{"params": int, "MACs": int, <label>: Latency, ...}``
    (one :class:`Latency` per input the model was timed on). The frame adds the MAC
    reduction (dense MACs / MACs) and, per latency, the median, the inter-quartile range
    and the speed-up (dense median / median); its index is named ``model``.
    """
    import pandas as pd  # here, not above: the check process imports this module fast

    if not rows:
        raise ValueError("cost_frame needs at least one row, got none")
    dense = next(iter(rows.values()))
    timed = [key for key, value in dense.items() if isinstance(value, Latency)]
    frame = {}
    for name, row in rows.items():
        line = {"params": row["params"], "MACs": row["MACs"],
                "MAC reduction": dense["MACs"] / row["MACs"]}
        for key in timed:
            line[f"{key}: ms"] = row[key].median_ms
            line[f"{key}: IQR ms"] = row[key].iqr_ms
            line[f"{key}: speed-up"] = dense[key].median_ms / row[key].median_ms
        frame[name] = line
    return pd.DataFrame.from_dict(frame, orient="index").rename_axis("model")


def costs(models: Mapping[str, nn.Module], input_shape: Sequence[int], *,
          batch_sizes: Sequence[int] = (1, 256), rounds: int = 1, min_run_time: float = 0.5,
          seed: int = 0) -> pd.DataFrame:
    """What each of ``models`` costs, the first one the reference: parameters, MACs of
    one input of ``input_shape``, and the latency at each batch size (:func:`cost_frame`).

    Latencies are measured in ``rounds`` interleaved rounds (every model and batch size
    once per round) and each keeps its fastest round's median: load from other processes
    drifts over seconds and can only add time, so interleaving spreads it over all models
    and the fastest round is the least disturbed. Inputs are random, drawn with ``seed``.
    """
    check_count(rounds, "rounds")
    generator = torch.Generator().manual_seed(check_seed(seed))
    example = torch.randn(1, *input_shape, generator=generator)
    batches = {size: torch.randn(check_count(size, "batch_sizes"), *input_shape,
                                 generator=generator) for size in batch_sizes}
    rows: dict[str, dict[str, Any]] = {
        name: {"params": num_parameters(model), "MACs": count_macs(model, example)}
        for name, model in models.items()}
    for _ in range(rounds):
        for name, model in models.items():
            for size, inputs in batches.items():
                latency = measure_latency(model, inputs, min_run_time=min_run_time)
                best = rows[name].get(f"batch {size}")
                if best is None or latency.median_ms < best.median_ms:
                    rows[name][f"batch {size}"] = latency
    return cost_frame(rows)
