"""Measuring a model: sparsity, size, MACs and latency.

* Size counts what a stored model really costs: every parameter at ``data_width``
  bits, or only the non-zeros plus the index that says where they are (CSR or a
  bitmask), the overhead the original lab left out.
* MACs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
  2 FLOPs per multiply-accumulate of matrix products and convolutions (``mm``,
  ``addmm``, ``bmm``, ``convolution`` and their kin) and **nothing** for BatchNorm,
  ReLU, pooling or additions; MACs = FLOPs / 2.
* Latency is timed with :mod:`torch.utils.benchmark` (warm-up, a fixed thread count,
  many runs) and reported as the median and inter-quartile range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
INDEX_FORMATS = (None, "csr", "bitmask")


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers pruning acts on (``Conv2d`` and ``Linear``), by qualified name."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    if not layers:
        raise ValueError(
            f"model has no prunable layer: expected at least one of "
            f"{[t.__name__ for t in PRUNABLE_TYPES]} in {type(model).__name__}"
        )
    return layers


def get_sparsity(tensor: torch.Tensor) -> float:
    """Fraction of zeros: ``#zeros / #elements`` (0 for an empty tensor)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.numel() == 0:
        return 0.0
    return 1.0 - tensor.count_nonzero().item() / tensor.numel()


def model_sparsity(model: nn.Module) -> float:
    """Fraction of zeros over the weights of all prunable layers."""
    weights = [m.weight for m in prunable_layers(model).values()]
    zeros = sum(w.numel() - w.count_nonzero().item() for w in weights)
    return zeros / sum(w.numel() for w in weights)


def num_parameters(model: nn.Module, count_nonzero_only: bool = False) -> int:
    """Number of parameters, or of non-zero parameters."""
    if count_nonzero_only:
        return sum(p.count_nonzero().item() for p in model.parameters())
    return sum(p.numel() for p in model.parameters())


def _check_width(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ValueError(f"{name} must be an int in [1, 64] bits, got {value!r}")


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
    _check_width("data_width", data_width)
    _check_width("index_width", index_width)
    if index not in INDEX_FORMATS:
        raise ValueError(f"index must be one of {INDEX_FORMATS}, got {index!r}")
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
) -> int:
    """Model size in bits.

    ``count_nonzero_only=True`` counts only non-zero parameters, with no index (the
    original lab's optimistic figure). ``index="csr"`` or ``"bitmask"`` stores the
    weights of prunable layers sparsely with that index overhead; other parameters
    (biases, BatchNorm) stay dense.
    """
    _check_width("data_width", data_width)
    if count_nonzero_only and index is not None:
        raise ValueError("count_nonzero_only and index exclude each other: pick one")
    if count_nonzero_only:
        return num_parameters(model, count_nonzero_only=True) * data_width
    sparse = {id(m.weight) for m in prunable_layers(model).values()} if index else set()
    return sum(
        tensor_size_bits(p, data_width, index if id(p) in sparse else None, index_width)
        for p in model.parameters()
    )


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
    return _count_flops(model, inputs).get_total_flops() // 2


def macs_per_layer(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """MACs of each prunable layer in one forward pass, by qualified name."""
    counts = _count_flops(model, inputs).get_flop_counts()
    prefix = type(model).__name__
    return {
        name: sum(counts.get(f"{prefix}.{name}", {}).values()) // 2
        for name in prunable_layers(model)
    }


@dataclass(frozen=True)
class Latency:
    """Latency of one forward pass in milliseconds."""

    median_ms: float
    iqr_ms: float
    runs: int
    threads: int

    def __str__(self) -> str:
        return f"{self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f} ms, {self.runs} runs)"


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    threads: int = 1,
    min_run_time: float = 0.5,
) -> Latency:
    """Time ``model(inputs)`` with :class:`torch.utils.benchmark.Timer`.

    ``threads`` is fixed so runs compare; ``min_run_time`` seconds of measurement
    follow a warm-up. Reports the median and the inter-quartile range.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be positive, got {min_run_time!r}")
    was_training = model.training
    model.eval()
    timer = benchmark.Timer(
        stmt="model(inputs)", globals={"model": model, "inputs": inputs}, num_threads=threads
    )
    result = timer.blocked_autorange(min_run_time=min_run_time)
    model.train(was_training)
    return Latency(
        median_ms=result.median * 1e3,
        iqr_ms=result.iqr * 1e3,
        runs=len(result.times),
        threads=threads,
    )
