"""Networks found by different searches, side by side.

AMC, NetAdapt, a sensitivity scan and uniform ratios each return a pruned network; the
lecture's comparison puts them next to the dense one at once: how wide each conv is,
what share of the dense MACs it costs, how long it takes (the fastest of repeated runs,
:func:`labkit.measure.fastest_run_ms`), how accurate it is, and how accurate after a
short finetune (done on a copy; the networks are left as they were).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from labkit.measure import count_macs, fastest_run_ms
from labkit.training import evaluate

if TYPE_CHECKING:
    import pandas as pd


def compare_networks(networks: Mapping[str, nn.Module], example: torch.Tensor,
                     latency_batch: torch.Tensor, val_loader: DataLoader,
                     test_loader: DataLoader,
                     finetune: Callable[[nn.Module], object] | None = None) -> pd.DataFrame:
    """Pruned networks side by side, ``{label: network}``, the first the dense model.

    A row per network (index ``network``): ``conv widths``, ``MACs`` per ``example``
    against the first network's, ``ms``, the fastest of 20 runs on ``latency_batch`` (one
    thread), ``val (%)`` and ``test (%)`` accuracy and, when ``finetune`` is given, the
    same after ``finetune`` ran on a copy of every network but the first (missing for the
    first).
    """
    import pandas as pd

    if not networks:
        raise ValueError("compare_networks needs at least one network, got none")
    dense_macs = count_macs(next(iter(networks.values())), example)
    rows = {}
    for number, (label, network) in enumerate(networks.items()):
        tuned = None
        if finetune is not None and number > 0:
            tuned = copy.deepcopy(network)
            finetune(tuned)
        widths = [m.out_channels for m in network.modules() if isinstance(m, nn.Conv2d)]
        rows[label] = {"conv widths": str(tuple(widths)),
                       "MACs": count_macs(network, example) / dense_macs,
                       "ms": fastest_run_ms(network, latency_batch, runs=20),
                       "val (%)": evaluate(network, val_loader),
                       "test (%)": evaluate(network, test_loader),
                       "val, finetuned (%)": evaluate(tuned, val_loader) if tuned else None,
                       "test, finetuned (%)": evaluate(tuned, test_loader) if tuned else None}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("network")
