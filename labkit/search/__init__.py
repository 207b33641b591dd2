"""Automatic pruning: searching per-layer pruning ratios with AMC and NetAdapt.

The searches run on a fixed number of torch threads, set by
:func:`labkit.training.torch_threads` (also importable from here).
"""

from labkit.training import torch_threads

__all__ = ["torch_threads"]
