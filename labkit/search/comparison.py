"""Networks found by different searches, side by side.

AMC, NetAdapt, a sensitivity scan and uniform ratios each return a pruned network; the
lecture's comparison puts them next to the dense one at once: how wide each conv is,
what share of the dense MACs it costs, how long it takes (the fastest of repeated runs,
:func:`labkit.measure.fastest_run_ms`), how accurate it is, and how accurate after a
short finetune (done on a copy; the networks are left as they were).

Before that, the policies themselves: per-layer ratios found by each method (over
several seeds for the searches), judged by the accuracy of the pruned network without
finetuning and by their MACs, and, to read a policy, what one channel of each conv costs
against how much accuracy pruning that conv alone loses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from labkit.measure import count_macs, fastest_run_ms
from labkit.search.amc import ChannelPruningEnv
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


def compare_policies(env: ChannelPruningEnv, policies: Mapping[str, Sequence[Sequence[float]]],
                     val_loader: DataLoader) -> pd.DataFrame:
    """Channel-pruning policies, ``{label: [ratios per run]}`` (one run for a rule, one per
    seed for a search), each pruned from ``env``'s channel-sorted model without finetuning.

    A row per (``policy``, ``run``): ``val (%)``, the accuracy on ``val_loader``, and
    ``MACs``, :meth:`~labkit.search.amc.ChannelPruningEnv.policy_macs` as a fraction of
    the dense MACs.
    """
    import pandas as pd

    if not policies or not all(policies.values()):
        raise ValueError(f"policies needs at least one policy per label, got {dict(policies)}")
    rows = {(label, run): {"val (%)": evaluate(env.pruned_model(ratios), val_loader),
                           "MACs": env.policy_macs(ratios) / env.dense_macs}
            for label, found in policies.items() for run, ratios in enumerate(found)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["policy", "run"])


def channel_costs(env: ChannelPruningEnv, scan: Mapping[int, Sequence[float]],
                  ratios: Sequence[float], ratio: float) -> pd.DataFrame:
    """What one channel of each conv of ``env`` costs against what pruning it loses.

    ``scan`` and ``ratios`` are a :func:`labkit.pruning.sensitivity.channel_ratio_scan`
    and its grid; ``ratio`` one of the grid's ratios. A row per conv (index ``conv``):
    its ``channels``, the ``MACs of one channel``
    (:meth:`~labkit.search.amc.ChannelPruningEnv.channel_macs`) and the validation
    accuracy with that conv alone pruned by ``ratio``.
    """
    import pandas as pd

    if ratio not in ratios:
        raise ValueError(f"ratio must be one of the scanned ratios {list(ratios)}, got {ratio}")
    if len(scan) != len(env.layers):
        raise ValueError(f"scan must hold one curve for each of the {len(env.layers)} convs, "
                         f"got {len(scan)}")
    step = list(ratios).index(ratio)
    rows = {layer.name: {"channels": layer.out_channels, "MACs of one channel": macs,
                         f"val (%), pruned alone by {ratio}": scan[i][step]}
            for i, (layer, macs) in enumerate(zip(env.layers, env.channel_macs(), strict=True))}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("conv")
