"""Comparison 4: measured speed-up of channel pruning against its MAC reduction.

Pruning a fraction ``r`` of every conv's channels leaves about ``(1 - r)^2`` of the
MACs, so the MAC reduction ``MACs_dense / MACs_pruned`` (about ``1 / (1 - r)^2``) is the
speed-up a machine bound by arithmetic alone would reach: the physical limit. The
measured speed-up ``latency_dense / latency_pruned`` falls short of it where time goes
to what does not shrink as fast (memory traffic, BatchNorm, pooling, the framework's
per-layer overhead, small matrices that use the CPU's vector units badly). The fraction
of the limit reached is ``speed-up / MAC reduction``.
"""

from __future__ import annotations

from labkit.measure import count_macs

from . import report
from .channels import labkit_prune
from .config import Config, cifar_inputs, cifar_model
from .timing import as_dicts, speedup, time_models

NAME = "speedup"
TITLE = "Channel pruning: measured speed-up against the MAC limit"


def run(config: Config) -> dict:
    dense = cifar_model(config)
    pruned = {ratio: labkit_prune(dense, ratio) for ratio in config.speedup_ratios}
    one = cifar_inputs(config, 1)
    dense_macs = count_macs(dense, one)
    rows = []
    for batch in config.batch_sizes:
        times = time_models({"dense": dense, **{str(r): m for r, m in pruned.items()}},
                            cifar_inputs(config, batch), config)
        json_times = as_dicts(times)
        for ratio, model in pruned.items():
            limit = dense_macs / count_macs(model, one)
            measured = speedup(times["dense"], times[str(ratio)])
            rows.append({"ratio": ratio, "batch": batch, "dense": json_times["dense"],
                         "pruned": json_times[str(ratio)], "mac_reduction": limit,
                         "speedup": measured, "fraction_of_limit": measured / limit})
    return {"rows": rows}


def markdown(results: dict) -> str:
    table = report.table(
        ("ratio", "batch", "dense", "pruned", "MAC reduction (limit)", "measured speed-up",
         "fraction of the limit"),
        [(report.percent(r["ratio"]), r["batch"], report.milliseconds(r["dense"]),
          report.milliseconds(r["pruned"]), report.ratio(r["mac_reduction"]),
          report.ratio(r["speedup"]), report.percent(r["fraction_of_limit"]))
         for r in results["rows"]])
    return ("**CIFAR VGG**, labkit's uniform channel pruning (channels sorted by importance "
            "first), latency in ms.\n\n" + table + "\n")
