"""Automatic pruning: searching per-layer pruning ratios with AMC and NetAdapt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from labkit.validation import check_count


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads and restore the count after.

    The searches run thousands of forward and backward passes of tiny networks, for which
    a thread pool's synchronisation costs more than it saves: on a 2-core machine shared
    with other work, one thread runs them several times faster than two. ``None`` leaves
    the count to torch.
    """
    if threads is not None:
        check_count(threads, "threads")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
