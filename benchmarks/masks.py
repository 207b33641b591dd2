"""Comparison 1: labkit's masks against :mod:`torch.nn.utils.prune`.

Three pairs that compute the same definition:

* ``l1_unstructured``: prune the ``round(n * s)`` weights of smallest ``|w|`` of each
  layer, against :func:`labkit.pruning.granularity.fine_grained_mask`;
* ``ln_structured`` with ``n=2, dim=0``: prune the ``round(c * s)`` output channels of
  smallest L2 norm, against :func:`labkit.pruning.granularity.channel_mask`;
* ``global_unstructured`` with ``L1Unstructured``: one ranking of ``|w|`` over every
  layer, against :func:`labkit.pruning.granularity.mask_from_scores` on the concatenated
  magnitudes.

Both prune exactly as many entries; they can differ only where magnitudes tie: labkit
keeps the first of equal scores (row-major order), ``prune`` takes whatever
``torch.topk`` returns. The tie case quantizes the lab model's weights to 16 levels.

Then, for ``l1_unstructured``: the time to compute and apply the masks on a fresh copy
(``prune`` re-parametrises the module; labkit's :func:`~labkit.pruning.masking.apply_masks`
returns a copy with zeroed weights), the inference time with the masks applied
(``prune`` recomputes ``weight = weight_orig * weight_mask`` in a forward pre-hook at
every call), and what the checkpoint looks like.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from labkit.measure import prunable_layers
from labkit.pruning.granularity import channel_mask, fine_grained_mask, mask_from_scores
from labkit.pruning.masking import apply_masks

from . import report
from .config import Config, cifar_inputs, cifar_model, lab_inputs, lab_model
from .timing import as_dicts, speedup, time_calls, time_models

NAME = "masks"
TITLE = "Masks: labkit against torch.nn.utils.prune"
METHODS = ("l1_unstructured", "ln_structured", "global_unstructured")
TIE_LEVELS = 16


def global_magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """One ranking of ``|w|`` over all prunable layers: prune the smallest ``round(N * s)``."""
    weights = {f"{name}.weight": layer.weight.detach()
               for name, layer in prunable_layers(model).items()}
    scores = torch.cat([weight.abs().flatten() for weight in weights.values()])
    keep = mask_from_scores(scores, sparsity).split([w.numel() for w in weights.values()])
    return {name: part.reshape(weight.shape)
            for (name, weight), part in zip(weights.items(), keep, strict=True)}


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def labkit_masks(model: nn.Module, method: str, sparsity: float) -> dict[str, torch.Tensor]:
    """labkit's keep-masks for the definition of ``prune``'s ``method``."""
    _check_method(method)
    if method == "global_unstructured":
        return global_magnitude_masks(model, sparsity)
    mask = fine_grained_mask if method == "l1_unstructured" else channel_mask
    return {f"{name}.weight": mask(layer.weight, sparsity)
            for name, layer in prunable_layers(model).items()}


def prune_in_place(model: nn.Module, method: str, sparsity: float) -> nn.Module:
    """``torch.nn.utils.prune``'s ``method`` on every prunable layer of ``model``."""
    _check_method(method)
    layers = list(prunable_layers(model).values())
    if method == "global_unstructured":
        prune.global_unstructured([(layer, "weight") for layer in layers],
                                  pruning_method=prune.L1Unstructured, amount=sparsity)
    elif method == "l1_unstructured":
        for layer in layers:
            prune.l1_unstructured(layer, "weight", amount=sparsity)
    else:
        for layer in layers:
            prune.ln_structured(layer, "weight", amount=sparsity, n=2, dim=0)
    return model


def prune_masks(model: nn.Module, method: str, sparsity: float) -> dict[str, torch.Tensor]:
    """``prune``'s masks (its ``weight_mask`` buffers) as boolean keep-masks."""
    pruned = prune_in_place(copy.deepcopy(model), method, sparsity)
    return {f"{name}.weight": layer.weight_mask.bool()
            for name, layer in prunable_layers(pruned).items()}


def mask_agreement(model: nn.Module, method: str, sparsity: float) -> dict:
    """Elements where the two masks differ, and whether they prune as many."""
    ours, theirs = labkit_masks(model, method, sparsity), prune_masks(model, method, sparsity)
    return {
        "method": method,
        "sparsity": sparsity,
        "elements": sum(mask.numel() for mask in ours.values()),
        "differing": sum((ours[name] != theirs[name]).sum().item() for name in ours),
        "pruned_labkit": sum((~mask).sum().item() for mask in ours.values()),
        "pruned_prune": sum((~mask).sum().item() for mask in theirs.values()),
    }


def quantized(model: nn.Module, levels: int) -> nn.Module:
    """A copy whose weights take ``levels`` values per layer: many equal magnitudes."""
    tied = copy.deepcopy(model)
    with torch.no_grad():
        for layer in prunable_layers(tied).values():
            step = layer.weight.abs().max() / (levels // 2)
            layer.weight.copy_(torch.round(layer.weight / step) * step)
    return tied


def state_dict_facts(model: nn.Module, fresh: nn.Module) -> dict:
    """Keys, extra keys, bytes saved, whether a fresh model loads it (``strict=True``), and
    whether ``copy.deepcopy`` works on the model (``prune``'s computed ``weight`` is not a
    leaf tensor, which deepcopy refuses)."""
    state = model.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    expected = set(fresh.state_dict())
    return {"keys": len(state), "extra_keys": sorted(set(state) - expected)[:2],
            "extra_key_count": len(set(state) - expected), "bytes": buffer.getbuffer().nbytes,
            "loads_strict": _succeeds(lambda: copy.deepcopy(fresh).load_state_dict(state)),
            "deepcopies": _succeeds(lambda: copy.deepcopy(model))}


def _succeeds(action: Callable[[], object]) -> bool:
    """Whether ``action()`` runs without a RuntimeError."""
    try:
        action()
    except RuntimeError:
        return False
    return True


def checkpoints(model: nn.Module, sparsity: float) -> dict[str, dict]:
    """The state dict of the dense model and of each way of holding the pruned one."""
    hooked = prune_in_place(copy.deepcopy(model), "l1_unstructured", sparsity)
    removed = prune_in_place(copy.deepcopy(model), "l1_unstructured", sparsity)
    for layer in prunable_layers(removed).values():
        prune.remove(layer, "weight")
    ours = apply_masks(model, labkit_masks(model, "l1_unstructured", sparsity))
    models = {"dense": model, "prune (masks attached)": hooked,
              "prune after prune.remove": removed, "labkit apply_masks": ours}
    return {name: state_dict_facts(candidate, model) for name, candidate in models.items()}


def apply_times(model: nn.Module, method: str, sparsity: float, config: Config) -> dict:
    """Compute and apply the masks on a fresh copy: ``prune`` against labkit."""
    times = time_calls({
        "deepcopy": lambda: copy.deepcopy(model),
        "prune": lambda: prune_in_place(copy.deepcopy(model), method, sparsity),
        "labkit": lambda: apply_masks(model, labkit_masks(model, method, sparsity)),
    }, config)
    return {"method": method, **as_dicts(times),
            "prune_over_labkit": speedup(times["prune"], times["labkit"])}


def inference_times(model: nn.Module, inputs: torch.Tensor, sparsity: float,
                    config: Config) -> dict:
    """Forward pass of the masked model: ``prune``'s pre-hook against zeroed weights."""
    hooked = prune_in_place(copy.deepcopy(model), "l1_unstructured", sparsity).eval()
    ours = apply_masks(model, labkit_masks(model, "l1_unstructured", sparsity)).eval()
    with torch.no_grad():
        difference = (hooked(inputs) - ours(inputs)).abs().max().item()
    times = time_models({"prune": hooked, "labkit": ours}, inputs, config)
    return {"batch": len(inputs), **as_dicts(times),
            "prune_over_labkit": speedup(times["prune"], times["labkit"]),
            "max_abs_output_difference": difference}


def run(config: Config) -> dict:
    models = {"lab": (lab_model(config), lambda batch: lab_inputs(config, batch)),
              "cifar": (cifar_model(config), lambda batch: cifar_inputs(config, batch))}
    sparsity = config.timing_sparsity
    results = {"agreement": [], "ties": [], "apply": [], "inference": []}
    for kind, (model, inputs) in models.items():
        for method in METHODS:
            for value in config.mask_sparsities if kind == "lab" else (sparsity,):
                results["agreement"].append({"model": kind, **mask_agreement(model, method,
                                                                             value)})
            results["apply"].append({"model": kind, **apply_times(model, method, sparsity,
                                                                  config)})
        for batch in config.batch_sizes:
            results["inference"].append({"model": kind, **inference_times(
                model, inputs(batch), sparsity, config)})
    tied = quantized(models["lab"][0], TIE_LEVELS)
    for method in METHODS:
        results["ties"].append({"model": f"lab, {TIE_LEVELS} levels", "levels": TIE_LEVELS,
                                **mask_agreement(tied, method, sparsity)})
    results["checkpoints"] = checkpoints(models["cifar"][0], sparsity)
    results["sparsity"] = sparsity
    return results


def markdown(results: dict) -> str:
    agreement = report.table(
        ("model", "method", "sparsity", "weights", "masks differ at", "pruned (labkit / prune)"),
        [(r["model"], f"`{r['method']}`", report.percent(r["sparsity"]), f"{r['elements']:,}",
          f"{r['differing']:,}", f"{r['pruned_labkit']:,} / {r['pruned_prune']:,}")
         for r in results["agreement"] + results["ties"]])
    apply = report.table(
        ("model", "method", "deepcopy alone", "prune", "labkit", "prune / labkit"),
        [(r["model"], f"`{r['method']}`", report.milliseconds(r["deepcopy"]),
          report.milliseconds(r["prune"]), report.milliseconds(r["labkit"]),
          report.ratio(r["prune_over_labkit"])) for r in results["apply"]])
    inference = report.table(
        ("model", "batch", "prune (pre-hook)", "labkit (zeroed weights)", "prune / labkit",
         "max output difference"),
        [(r["model"], r["batch"], report.milliseconds(r["prune"]),
          report.milliseconds(r["labkit"]), report.ratio(r["prune_over_labkit"]),
          f"{r['max_abs_output_difference']:.1e}") for r in results["inference"]])
    checkpoint = report.table(
        ("CIFAR VGG held as", "keys", "extra keys", "MiB saved", "loads into a fresh VGG",
         "`copy.deepcopy`"),
        [(name, facts["keys"],
          f"{facts['extra_key_count']} (`{'`, `'.join(facts['extra_keys'])}`, …)"
          if facts["extra_key_count"] else "0",
          f"{facts['bytes'] / 2**20:.1f}", _yes(facts["loads_strict"]), _yes(facts["deepcopies"]))
         for name, facts in results["checkpoints"].items()])
    sparsity = report.percent(results["sparsity"])
    return "\n\n".join([
        f"**Identical masks.** In the last rows the lab model's weights are rounded to "
        f"{TIE_LEVELS} levels per layer, so that many magnitudes tie.", agreement,
        f"**Time to compute and apply** the masks at {sparsity} sparsity on a fresh copy "
        "of the model, ms.", apply,
        f"**Inference** with `l1_unstructured` masks at {sparsity} applied, ms.", inference,
        f"**Checkpoints** after `l1_unstructured` at {sparsity}.", checkpoint,
    ]) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
