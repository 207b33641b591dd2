"""Timing and the machine it runs on.

Timings use :class:`torch.utils.benchmark.Timer` at a fixed thread count: a model by
:func:`labkit.measure.measure_latency`, any other call by :func:`labkit.measure.time_call`.
The candidates of one comparison are timed in **alternating rounds** (A, B, A, B, ...),
each round ``min_run_time / rounds`` seconds long (and at least one call), so that
load from other processes, which drifts over seconds, falls on all of them alike. The
result is the median of the round medians, with the inter-quartile range over rounds,
as a :class:`labkit.measure.Latency`.

A speed figure is always a ratio ``baseline / candidate`` of two medians measured in
the same run: above 1 means the candidate is faster.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict

import torch
from torch import nn

from labkit import __version__ as labkit_version
from labkit.measure import Latency, measure_latency, time_call

from .config import Config


def _pooled(rounds: list[Latency]) -> Latency:
    """Median of the round medians, and their inter-quartile range."""
    medians = [latency.median_ms for latency in rounds]
    if len(medians) == 1:
        return rounds[0]
    first, _, third = statistics.quantiles(medians, n=4, method="inclusive")
    return Latency(median_ms=statistics.median(medians), iqr_ms=third - first,
                   runs=sum(latency.runs for latency in rounds), threads=rounds[0].threads)


def alternate(measure: Mapping[str, Callable[[float], Latency]],
              config: Config) -> dict[str, Latency]:
    """Run ``measure[name](seconds)`` for every name, round after round."""
    seconds = config.min_run_time / config.rounds
    rounds: dict[str, list[Latency]] = {name: [] for name in measure}
    for _ in range(config.rounds):
        for name, measure_once in measure.items():
            rounds[name].append(measure_once(seconds))
    return {name: _pooled(latencies) for name, latencies in rounds.items()}


def time_calls(calls: Mapping[str, Callable[[], object]], config: Config) -> dict[str, Latency]:
    """Latency of each ``calls[name]()``, timed in alternating rounds."""
    return alternate({
        name: lambda seconds, fn=fn: time_call(fn, threads=config.threads, min_run_time=seconds)
        for name, fn in calls.items()}, config)


def time_models(models: Mapping[str, nn.Module], inputs: torch.Tensor,
                config: Config) -> dict[str, Latency]:
    """Latency of each ``models[name](inputs)`` in eval mode, in alternating rounds."""
    return alternate({
        name: lambda seconds, model=model: measure_latency(
            model, inputs, threads=config.threads, min_run_time=seconds)
        for name, model in models.items()}, config)


def speedup(baseline: Latency, candidate: Latency) -> float:
    """``baseline / candidate`` of the medians: above 1 when ``candidate`` is faster."""
    return baseline.median_ms / candidate.median_ms


def as_dicts(latencies: Mapping[str, Latency]) -> dict[str, dict]:
    """Latencies by name, as JSON-ready dicts."""
    return {name: asdict(latency) for name, latency in latencies.items()}


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` says."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(config: Config) -> dict:
    """What the numbers were measured on, and when."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": config.threads,
        "torch_default_threads": torch.get_num_threads(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_pruning": _version("torch-pruning"),
        "labkit": labkit_version,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
