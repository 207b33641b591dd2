"""NetAdapt (Yang et al. 2018): shrink a network, layer by layer, to a *measured* latency budget.

MACs are only a proxy for what a user waits for. Latency is not proportional to MACs:
a convolution library picks its kernel by shape, so removing a few channels may save
nothing (the width stays inside the same vector block) while removing a few more saves
a lot. NetAdapt therefore works from measurements taken on the target machine:

1. **A latency lookup table.** Every conv of the network is timed as a conv -> BatchNorm
   -> ReLU block at its input resolution, for every candidate (input width, output width)
   pair, once, on this machine with a fixed thread count (:func:`latency_table`). A
   network's latency is estimated as the sum of its blocks' entries, so evaluating a
   candidate network costs a few dictionary look-ups instead of a benchmark.
2. **Iterations.** With a budget ``B`` and a step ``dR``, iteration ``i`` sets the
   constraint ``C_i = max(R_{i-1} - dR, B)``, where ``R_{i-1}`` is the current network's
   estimated latency. For *each* conv it removes just enough channels to meet ``C_i``
   (the largest candidate width whose table estimate is within ``C_i``), keeping the
   most important channels (:func:`labkit.pruning.channels.apply_channel_sorting`),
   short-finetunes that candidate on a few batches and measures its validation accuracy.
   The most accurate candidate becomes the next network.
3. It stops once the estimate is within ``B``. Every network along the way is returned:
   a family of latency / accuracy trade-offs. The paper then finetunes the chosen
   network for long; that step is not part of this function (finetune the network you
   pick with :func:`labkit.training.finetune`).

Unlike AMC, NetAdapt needs no learned policy; its cost is one short finetune per layer
and iteration.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import platform
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from labkit.files import write_atomically
from labkit.measure import count_macs, fastest_run_ms
from labkit.models import VGG
from labkit.pruning.channels import apply_channel_sorting, channel_prune, conv_blocks
from labkit.training import FINETUNE_LR, evaluate, finetune, torch_threads
from labkit.validation import check_count, check_loader, check_real, check_seed
from labkit.zoo import cache_file

if TYPE_CHECKING:
    import pandas as pd


def candidate_widths(channels: int, step: int) -> tuple[int, ...]:
    """The widths a layer of ``channels`` channels may shrink to: multiples of ``step``
    below ``channels``, and ``channels`` itself (``candidate_widths(32, 8) = (8, 16, 24, 32)``)."""
    check_count(channels, "channels")
    check_count(step, "step")
    return (*range(step, channels, step), channels)


@dataclass(frozen=True)
class Block:
    """A conv of the network as the table times it: geometry and input resolution."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    height: int
    width: int


def _blocks(model: VGG, inputs: torch.Tensor) -> list[Block]:
    """The convs of ``model`` with the resolution of their inputs for ``inputs``."""
    names = [conv for conv, _ in conv_blocks(model)]
    sizes: dict[str, tuple[int, int]] = {}

    def record_size(name: str):
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            sizes[name] = tuple(args[0].shape[2:])
        return hook

    hooks = [getattr(model.backbone, name).register_forward_pre_hook(record_size(name))
             for name in names]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(inputs[:1])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    blocks = []
    for name in names:
        conv = getattr(model.backbone, name)
        blocks.append(Block(f"backbone.{name}", conv.in_channels, conv.out_channels,
                            conv.kernel_size[0], conv.stride[0], conv.padding[0], *sizes[name]))
    return blocks


@dataclass(frozen=True)
class LatencyTable:
    """Measured latency (ms) of each conv block at each candidate (input, output) width.

    ``latency_ms[i][(c_in, c_out)]`` is conv ``i`` (``layers[i]``) with ``c_in`` input and
    ``c_out`` output channels, followed by its BatchNorm and ReLU, on a batch of the
    table's input shape. ``widths[i]`` are conv ``i``'s candidate output widths;
    its candidate input widths are ``in_channels`` (the image) for the first conv and
    ``widths[i - 1]`` after. ``key`` records what was measured, where and how.
    """

    layers: tuple[str, ...]
    in_channels: int
    widths: tuple[tuple[int, ...], ...]
    latency_ms: tuple[dict[tuple[int, int], float], ...]
    key: dict

    @property
    def entries(self) -> int:
        """How many blocks were measured: the table's size, all layers together."""
        return sum(map(len, self.latency_ms))

    def input_widths(self, layer: int) -> tuple[int, ...]:
        return (self.in_channels,) if layer == 0 else self.widths[layer - 1]

    def block_ms(self, layer: int, in_width: int, out_width: int) -> float:
        """The entry of conv ``layer`` at ``in_width`` input and ``out_width`` output channels."""
        entry = self.latency_ms[layer].get((in_width, out_width))
        if entry is None:
            raise ValueError(
                f"widths ({in_width}, {out_width}) of {self.layers[layer]} are not in the "
                f"table: input widths {self.input_widths(layer)}, output widths "
                f"{self.widths[layer]}")
        return entry

    def estimate_ms(self, widths: Sequence[int]) -> float:
        """Estimated latency of the network whose convs keep ``widths`` channels: the sum
        of the blocks' entries."""
        if len(widths) != len(self.layers):
            raise ValueError(f"widths must list one width for each of the {len(self.layers)} "
                             f"convs, got {list(widths)}")
        inputs = (self.in_channels, *widths[:-1])
        return sum(self.block_ms(i, c_in, c_out)
                   for i, (c_in, c_out) in enumerate(zip(inputs, widths, strict=True)))

    def to_json(self) -> str:
        return json.dumps({
            "key": self.key, "layers": self.layers, "in_channels": self.in_channels,
            "widths": self.widths,
            "latency_ms": [[[c_in, c_out, ms] for (c_in, c_out), ms in table.items()]
                           for table in self.latency_ms],
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        data = json.loads(text)
        return cls(tuple(data["layers"]), data["in_channels"],
                   tuple(tuple(w) for w in data["widths"]),
                   tuple({(c_in, c_out): ms for c_in, c_out, ms in table}
                         for table in data["latency_ms"]),
                   data["key"])


def _table_key(blocks: Sequence[Block], batch_size: int, step: int, threads: int,
               runs: int) -> dict:
    return {"blocks": [list(astuple(block)) for block in blocks],
            "batch_size": batch_size, "step": step, "threads": threads, "runs": runs,
            "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor()}


def latency_table_path(key: dict) -> Path:
    """The cache file of a table: ``latency-<hash of key>.json`` in labkit's cache folder."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_file("latency", digest, ".json")


def _cached_table(path: Path, key: dict) -> LatencyTable | None:
    if not path.exists():
        return None
    try:
        table = LatencyTable.from_json(path.read_text())
        if table.key != key:
            raise ValueError("the key differs")
        return table
    except Exception as error:  # any unreadable cache file means: measure again
        warnings.warn(f"latency table {path} is corrupt or stale ({error}); measuring again",
                      stacklevel=3)
        return None


def latency_table(model: VGG, inputs: torch.Tensor, *, step: int = 8, threads: int = 1,
                  runs: int = 10, cache: bool = True, progress: bool = True) -> LatencyTable:
    """Measure (or load) the latency lookup table of ``model``'s convs on this machine.

    ``inputs``: a batch of the shape to time (its batch size matters: the larger, the
    more the channel count shows). Each conv's candidate widths are
    :func:`candidate_widths` with ``step``; every (input, output) pair is timed with
    :func:`labkit.measure.fastest_run_ms`. The table is cached as JSON in labkit's cache folder
    (:func:`latency_table_path`), keyed by the blocks' geometry, batch size, step,
    thread count, runs, torch version and processor; a corrupt file is measured again.
    """
    for name, value in (("step", step), ("threads", threads), ("runs", runs)):
        check_count(value, name)
    blocks = _blocks(model, inputs)
    key = _table_key(blocks, inputs.shape[0], step, threads, runs)
    path = latency_table_path(key)
    if cache and (table := _cached_table(path, key)) is not None:
        return table
    widths = tuple(candidate_widths(block.out_channels, step) for block in blocks)
    inputs_widths = [(blocks[0].in_channels,), *widths[:-1]]
    pairs = [list(itertools.product(w_in, w_out)) for w_in, w_out in zip(inputs_widths, widths,
                                                                          strict=True)]
    generator = torch.Generator().manual_seed(0)
    latency_ms = []
    with tqdm(total=sum(map(len, pairs)), desc="latency table", disable=not progress,
              leave=False) as bar:
        for block, layer_pairs in zip(blocks, pairs, strict=True):
            entries = {}
            for c_in, c_out in layer_pairs:
                module = nn.Sequential(
                    nn.Conv2d(c_in, c_out, block.kernel_size, block.stride, block.padding,
                              bias=False), nn.BatchNorm2d(c_out), nn.ReLU()).eval()
                batch = torch.randn(inputs.shape[0], c_in, block.height, block.width,
                                    generator=generator)
                entries[(c_in, c_out)] = fastest_run_ms(module, batch, threads=threads,
                                                        runs=runs)
                bar.update()
            latency_ms.append(entries)
    table = LatencyTable(tuple(b.name for b in blocks), blocks[0].in_channels, widths,
                         tuple(latency_ms), key)
    if cache:
        write_atomically(path, table.to_json())
    return table


@dataclass(frozen=True)
class NetAdaptStep:
    """One network of NetAdapt's family.

    ``latency_ms`` is the table estimate of ``model`` (whose convs keep ``widths``
    channels), ``constraint_ms`` the step's budget it meets, ``val_accuracy`` its
    validation accuracy after the short finetune, ``layer`` the conv shrunk in this step
    (None for the starting network) and ``candidates`` every ``(conv, width, validation
    accuracy)`` tried in this step.
    """

    model: VGG
    widths: tuple[int, ...]
    latency_ms: float
    constraint_ms: float
    val_accuracy: float
    layer: str | None
    candidates: tuple[tuple[str, int, float], ...]


def _conv_widths(model: VGG) -> tuple[int, ...]:
    return tuple(getattr(model.backbone, conv).out_channels for conv, _ in conv_blocks(model))


def _check_table(model: VGG, table: LatencyTable) -> tuple[int, ...]:
    names = tuple(f"backbone.{conv}" for conv, _ in conv_blocks(model))
    widths = _conv_widths(model)
    if names != table.layers or any(w not in grid for w, grid in zip(widths, table.widths,
                                                                      strict=True)):
        raise ValueError(
            f"table does not fit the model: the model's convs {names} keep {widths} channels; "
            f"the table has convs {table.layers} with widths {table.widths}")
    return widths


def largest_width_within(table: LatencyTable, widths: Sequence[int], layer: int,
                         constraint_ms: float) -> int | None:
    """NetAdapt's "remove just enough channels": the largest candidate width below
    ``widths[layer]`` with which the network's estimate is within ``constraint_ms``
    (None when no candidate is)."""
    fitting = [w for w in table.widths[layer] if w < widths[layer] and table.estimate_ms(
        [*widths[:layer], w, *widths[layer + 1:]]) <= constraint_ms]
    return max(fitting, default=None)


def netadapt(model: VGG, table: LatencyTable, train_loader: Iterable, val_loader: DataLoader,
             *, latency_budget: float = 0.5, iterations: int = 4, finetune_batches: int = 10,
             lr: float = FINETUNE_LR, seed: int = 0, threads: int | None = 1,
             progress: bool = True) -> list[NetAdaptStep]:
    """Run NetAdapt on ``model`` until its estimated latency is ``latency_budget`` x the start.

    The step ``dR = (R_0 - B) / iterations``; each candidate is finetuned (with ``lr``) on
    the first ``finetune_batches`` batches of ``train_loader``, the same for all, and
    judged on ``val_loader``, with ``threads`` torch threads
    (:func:`labkit.training.torch_threads`). Returns the family: the starting network
    first, then one network per iteration. ``model`` is not changed. Raises
    ``ValueError`` when even the table's narrowest network misses the budget; warns and
    stops early when no single layer can meet a step's constraint.
    """
    check_real(latency_budget, "latency_budget", 0.0, 1.0, low_open=True)
    check_count(iterations, "iterations")
    check_count(finetune_batches, "finetune_batches")
    seed = check_seed(seed)
    check_loader(train_loader, "train_loader")
    check_loader(val_loader, "val_loader")
    widths = _check_table(model, table)
    start_ms = table.estimate_ms(widths)
    budget_ms = latency_budget * start_ms
    narrowest_ms = table.estimate_ms([grid[0] for grid in table.widths])
    if narrowest_ms > budget_ms:
        raise ValueError(
            f"latency_budget {latency_budget} is out of reach: the narrowest network in the "
            f"table takes {narrowest_ms / start_ms:.3f} of the starting latency")
    delta_ms = (start_ms - budget_ms) / iterations
    batches = list(itertools.islice(train_loader, finetune_batches))
    if not batches:
        raise ValueError("train_loader is empty: it yields no batch to finetune on")
    with torch_threads(threads):
        family = [NetAdaptStep(copy.deepcopy(model), widths, start_ms, start_ms,
                               evaluate(model, val_loader), None, ())]
        return _iterate(family, table, batches, val_loader, budget_ms, delta_ms, lr, seed,
                        progress)


def _iterate(family: list[NetAdaptStep], table: LatencyTable, batches: list,
             val_loader: DataLoader, budget_ms: float, delta_ms: float, lr: float, seed: int,
             progress: bool) -> list[NetAdaptStep]:
    """NetAdapt's loop: shrink the last network of ``family`` until it meets the budget."""
    total = math.ceil((family[0].latency_ms - budget_ms) / delta_ms) if delta_ms > 0 else 0
    with tqdm(total=total, desc="NetAdapt", unit="iteration", disable=not progress,
              leave=False) as bar:
        while family[-1].latency_ms > budget_ms:
            current = family[-1]
            constraint_ms = max(current.latency_ms - delta_ms, budget_ms)
            proposals = []
            for layer, name in enumerate(table.layers):
                width = largest_width_within(table, current.widths, layer, constraint_ms)
                if width is None:
                    continue
                ratios = [0.0] * len(current.widths)
                ratios[layer] = 1.0 - width / current.widths[layer]
                candidate = channel_prune(apply_channel_sorting(current.model), ratios)
                finetune(candidate, batches, epochs=1, lr=lr, seed=seed, threads=None,
                         progress=False)
                proposals.append((evaluate(candidate, val_loader), name, width, candidate))
            if not proposals:
                warnings.warn(f"no single layer meets the constraint {constraint_ms:.3f} ms; "
                              "stopping before the budget", stacklevel=3)
                break
            accuracy, name, _, chosen = max(proposals, key=lambda p: p[0])
            chosen_widths = _conv_widths(chosen)
            family.append(NetAdaptStep(
                chosen, chosen_widths, table.estimate_ms(chosen_widths), constraint_ms,
                accuracy, name, tuple((n, w, a) for a, n, w, _ in proposals)))
            bar.update()
    return family


def first_within_macs(family: Sequence[NetAdaptStep], budget_macs: float,
                      example: torch.Tensor) -> int:
    """The step of the first network of ``family`` whose MACs per ``example`` are within
    ``budget_macs``, or the last step when none is (NetAdapt's budget is latency, so its
    family crosses a MAC budget anywhere, or not at all)."""
    check_real(budget_macs, "budget_macs", 0.0)
    if not family:
        raise ValueError("first_within_macs needs at least one step, got none")
    return next((i for i, step in enumerate(family)
                 if count_macs(step.model, example) <= budget_macs), len(family) - 1)


def family_frame(family: Sequence[NetAdaptStep], example: torch.Tensor) -> pd.DataFrame:
    """NetAdapt's family (:func:`netadapt`), a row per step (index ``step``): conv
    ``widths``, the estimated latency ``ms`` and the step's ``constraint ms``, ``MACs``
    per ``example`` against the first network's, ``val (%)`` and every candidate the
    step tried (``conv->width: val %``)."""
    import pandas as pd

    if not family:
        raise ValueError("family_frame needs at least one step, got none")
    dense_macs = count_macs(family[0].model, example)
    rows = {i: {"widths": str(step.widths), "ms": step.latency_ms,
                "constraint ms": step.constraint_ms,
                "MACs": count_macs(step.model, example) / dense_macs,
                "val (%)": step.val_accuracy,
                "candidates tried (val %)": ", ".join(
                    f"{name.removeprefix('backbone.')}->{width}: {accuracy:.1f}"
                    for name, width, accuracy in step.candidates)}
            for i, step in enumerate(family)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("step")
