"""Comparison 7: pruning lab 08's transformer, labkit's Wanda against torchao's.

**Peer check.** torchao's ``WandaSparsifier`` (``torchao.sparsity``) prunes the same linear
layers from the same calibration tokens. Its masks are compared layer by layer with three
of labkit's: Wanda as the paper defines it (``|W_ij| * ||X_j||_2``, compared within each
output row, :func:`labkit.pruning.llm.wanda_mask`); the same score compared within the
whole layer; and ``|W_ij| * ||X_j||_2^2`` within the whole layer, which is what torchao's
code computes (its observer accumulates the *squared* norm, and it ranks the whole layer).
Calibration is not sequential here (torchao observes the dense model in one pass), so
each layer's statistics come from the dense model for both.

**Methods.** Wall time of :func:`labkit.pruning.llm.prune` (sequential calibration) and
validation perplexity for magnitude, Wanda and SparseGPT at 50% unstructured and 2:4.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings

import torch

from labkit import zoo
from labkit.data import load
from labkit.models import GPT
from labkit.pruning import llm
from labkit.search import torch_threads
from labkit.training import perplexity

from . import report
from .config import Config, seeded

NAME = "llm"
TITLE = "Pruning a transformer: Wanda against torchao, time and perplexity per method"
MODEL = "gpt-pydoc"
CALIBRATION_SAMPLES = 128
TARGETS = {"50%": {"sparsity": 0.5}, "2:4": {"nm": (2, 4)}}


def lab_model(config: Config) -> GPT:
    """Lab 08's pretrained GPT, or a tiny random one in the smoke preset."""
    if config.pretrained:
        return zoo.pretrained(MODEL, progress=False)
    return seeded(lambda: GPT(load("pydoc").vocab_size, context=16, width=16, depth=1,
                              heads=2), config.seed)


def torchao_wanda(model: GPT, calibration: torch.Tensor, target: dict) -> tuple[GPT, float]:
    """A copy of ``model`` pruned by torchao's ``WandaSparsifier``, and the seconds taken."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.sparsity import WandaSparsifier

        start = time.perf_counter()
        pruned = copy.deepcopy(model)
        block = target["nm"][1] if "nm" in target else None
        sparsifier = WandaSparsifier(sparsity_level=target.get("sparsity", 0.5),
                                     semi_structured_block_size=block)
        sparsifier.prepare(pruned, [{"tensor_fqn": f"{name}.weight"}
                                    for name in llm.linear_layers(pruned)])
        with torch.no_grad():
            pruned(calibration[:, :model.context])
        sparsifier.step()
        sparsifier.squash_mask()
    return pruned.eval(), time.perf_counter() - start


def labkit_masks(model: GPT, calibration: torch.Tensor, target: dict) -> dict[str, dict]:
    """Per layer, labkit's three Wanda variants on the dense model's inputs."""
    masks = {}
    for name, layer in llm.linear_layers(model).items():
        norms = llm.input_statistics(model, name, calibration).norms
        weight = layer.weight.detach()
        paper, squared = llm.wanda_score(weight, norms), llm.wanda_score(weight, norms ** 2)
        if "nm" in target:
            masks[name] = {"paper": llm.nm_score_mask(paper, *target["nm"]),
                           "squared": llm.nm_score_mask(squared, *target["nm"])}
        else:
            masks[name] = {"paper": llm.mask(paper, **target),
                           "layer": llm.mask(paper, **target, group="layer"),
                           "squared": llm.mask(squared, **target, group="layer")}
    return masks


def peer_rows(model: GPT, calibration: torch.Tensor, val: torch.Tensor) -> list[dict]:
    rows = []
    for label, target in TARGETS.items():
        pruned, seconds = torchao_wanda(model, calibration, target)
        ours = labkit_masks(model, calibration, target)
        for name, layer in llm.linear_layers(pruned).items():
            theirs = layer.weight.detach() != 0
            agreement = {variant: float((mask == theirs).float().mean())
                         for variant, mask in ours[name].items()}
            rows.append({"target": label, "layer": name, "agreement": agreement})
        rows.append({"target": label, "layer": "(model)", "torchao_seconds": seconds,
                     "torchao_perplexity": perplexity(pruned, val)})
    return rows


def method_rows(model: GPT, calibration: torch.Tensor, val: torch.Tensor,
                config: Config) -> list[dict]:
    rows = [{"method": "dense", "target": "", "seconds": [], "perplexity":
             perplexity(model, val)}]
    for label, target in TARGETS.items():
        for method in llm.METHODS:
            runs = [llm.prune(model, calibration, method, **target)
                    for _ in range(config.rounds)]
            rows.append({"method": method, "target": label,
                         "seconds": [r.seconds for r in runs],
                         "perplexity": perplexity(runs[0].model, val)})
    return rows


def run(config: Config) -> dict:
    model = lab_model(config)
    corpus = load("pydoc")
    samples = CALIBRATION_SAMPLES if config.pretrained else 8
    calibration = corpus.windows("train", model.context, count=samples, seed=config.seed)
    val = corpus.windows("val", model.context)
    if not config.pretrained:
        val = val[:8]
    with torch_threads(config.threads):
        return {"calibration_tokens": samples * model.context, "val_tokens": val[:, 1:].numel(),
                "methods": method_rows(model, calibration, val, config),
                "peer": peer_rows(model, calibration, val)}


def markdown(results: dict) -> str:
    methods = report.table(
        ("method", "pattern", "pruning time (median, s)", "validation perplexity"),
        [(r["method"], r["target"] or "dense",
          f"{statistics.median(r['seconds']):.2f}" if r["seconds"] else "",
          f"{r['perplexity']:.3f}") for r in results["methods"]])
    layers = [r for r in results["peer"] if r["layer"] != "(model)"]
    peer = report.table(
        ("pattern", "layer", "= labkit Wanda (row, ‖X‖)", "= whole layer, ‖X‖",
         "= whole layer, ‖X‖²"),
        [(r["target"], f"`{r['layer']}`", report.percent(r["agreement"]["paper"]),
          report.percent(r["agreement"]["layer"]) if "layer" in r["agreement"] else "n/a",
          f"{100 * r['agreement']['squared']:.1f}%") for r in layers])
    models = [r for r in results["peer"] if r["layer"] == "(model)"]
    torchao = report.table(
        ("pattern", "torchao time (s)", "torchao validation perplexity"),
        [(r["target"], f"{r['torchao_seconds']:.2f}", f"{r['torchao_perplexity']:.3f}")
         for r in models])
    return (f"**Lab 08's GPT**, {results['calibration_tokens']:,} calibration tokens from the "
            f"training split, perplexity on {results['val_tokens']:,} validation tokens; "
            "pruning time includes the calibration passes.\n\n" + methods + "\n\n"
            "**Mask agreement with torchao's `WandaSparsifier`** (fraction of equal mask "
            "entries per layer).\n\n" + peer + "\n\n" + torchao + "\n")
