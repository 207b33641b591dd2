"""Pretrained dense models: shipped with labkit, trained on first use where they are not.

Nothing is downloaded. labkit ships the weights of every recipe (``labkit/weights``),
trained once with :func:`ship`, so every reader, student and grader starts from the same
models, and what a lab computes from them without training matches the book on any
machine. Training depends on the CPU: other vector instructions round sums in another
order, the differences grow over the epochs, and a model trained on another CPU prunes a
little differently (the finetuning inside a lab is subject to the same).

``pretrained(name)`` returns the model from the cache folder ``$LABKIT_CACHE`` (default
``~/.cache/labkit``). On first use it copies the shipped weights there; where a recipe
has none (a recipe of your own), it trains the model on this machine (a few seconds on a
CPU for the digits models) and caches that. The cache file is named by a hash of the
model's recipe and the labkit version, written atomically, and holds the hash again; a
file that is corrupt or stale is replaced with a warning, never a crash.

A trained model is the same bit for bit on every run of one machine, whatever the
caller's thread count: it trains on the recipe's fixed number of torch threads with
``torch.use_deterministic_algorithms`` on (both restored afterwards), and both settings
are part of the recipe, hence of the hash.

The cache folder may hold other files; :func:`clear_cache` deletes only the files
labkit wrote there (names of the form ``<kind>-<16 hex digits>.pt`` or ``.json``, and
the temporary files of an interrupted write).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from labkit import __version__
from labkit.data import Corpus, load
from labkit.files import write_atomically
from labkit.models import DIGITS_WIDTHS, GPT, MLP, RESNET_DIGITS_WIDTHS, VGG, ResNet
from labkit.training import TRAIN_LR, TRAIN_THREADS, train, train_language_model


@dataclass(frozen=True)
class Recipe:
    """How a pretrained model is made: architecture, data and training settings."""

    architecture: str
    dataset: str = "digits"
    epochs: int = 15
    lr: float = TRAIN_LR
    batch_size: int = 64
    seed: int = 0
    options: dict = field(default_factory=dict)
    threads: int = TRAIN_THREADS
    deterministic: bool = True

    def build(self) -> nn.Module:
        torch.manual_seed(self.seed)
        return ARCHITECTURES[self.architecture](**self.options)

    def digest(self) -> str:
        text = json.dumps({"recipe": asdict(self), "labkit": __version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def pydoc_gpt(**options) -> GPT:
    """A :class:`~labkit.models.GPT` over the characters of the ``pydoc`` corpus."""
    return GPT(load("pydoc").vocab_size, **options)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"vgg": VGG, "mlp": MLP,
                                                      "resnet": ResNet,
                                                      "gpt-pydoc": pydoc_gpt}

RECIPES: dict[str, Recipe] = {
    "vgg-digits": Recipe("vgg", options={"widths": list(DIGITS_WIDTHS)}),
    "mlp-digits": Recipe("mlp", options={"hidden": [128, 64]}),
    "resnet-digits": Recipe("resnet", options={"widths": list(RESNET_DIGITS_WIDTHS),
                                               "blocks": 2}),
    "gpt-pydoc": Recipe("gpt-pydoc", dataset="pydoc", epochs=3, lr=5e-3, batch_size=32,
                        options={"context": 64, "width": 96, "depth": 2, "heads": 4}),
}


def cache_dir() -> Path:
    """``$LABKIT_CACHE`` if set, else ``~/.cache/labkit``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labkit"
    return Path(os.environ.get("LABKIT_CACHE", default))


def cache_file(kind: str, digest: str, suffix: str) -> Path:
    """The cache file ``<kind>-<digest><suffix>``: the one naming scheme of every file
    labkit writes into its cache folder (``digest``: 16 hex digits)."""
    if not re.fullmatch(r"[0-9a-f]{16}", digest):
        raise ValueError(f"digest must be 16 hex digits, got {digest!r}")
    return cache_dir() / f"{kind}-{digest}{suffix}"


CACHE_SUFFIXES = (".pt", ".json")
CACHE_KINDS_EXTRA = ("latency",)
"""Kinds of cache file other than the recipes: NetAdapt's latency tables."""


def cache_path(name: str) -> Path:
    return cache_file(name, _recipe(name).digest(), ".pt")


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"name must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


@contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """Run the block with ``torch.use_deterministic_algorithms(enabled)``; restore after."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


SHIPPED = Path(__file__).with_name("weights")
"""The folder of the weights labkit ships, one cache file per recipe."""


def shipped_path(name: str) -> Path:
    """Where labkit ships the weights of recipe ``name`` (they may be absent)."""
    return SHIPPED / cache_path(name).name


def _state_dict(path: Path, recipe: Recipe) -> dict:
    """The weights stored in ``path``, refused unless they were made by ``recipe``."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["digest"] != recipe.digest():
        raise ValueError("recipe digest differs")
    return payload["state_dict"]


def _train(model: nn.Module, recipe: Recipe, progress: bool) -> None:
    splits = load(recipe.dataset, seed=recipe.seed)
    with deterministic_algorithms(recipe.deterministic):
        if isinstance(splits, Corpus):
            train_language_model(model, splits, epochs=recipe.epochs, lr=recipe.lr,
                                 batch_size=recipe.batch_size, seed=recipe.seed,
                                 threads=recipe.threads, progress=progress)
        else:
            train_loader, val_loader, _ = splits.loaders(recipe.batch_size, seed=recipe.seed)
            train(model, train_loader, val_loader, epochs=recipe.epochs, lr=recipe.lr,
                  seed=recipe.seed, threads=recipe.threads, progress=progress)


def pretrained(name: str = "vgg-digits", *, progress: bool = True) -> nn.Module:
    """The dense model ``name`` in eval mode on the CPU: from the cache, else from the
    weights labkit ships (copied into the cache), else trained here and cached.

    A model trained here is trained with the recipe's thread count and deterministic
    algorithms, so it is the same whatever the caller's ``torch.get_num_threads()``."""
    recipe = _recipe(name)
    path = cache_path(name)
    for source in (path, shipped_path(name)):
        if not source.exists():
            continue
        model = recipe.build()
        try:
            model.load_state_dict(_state_dict(source, recipe))
        except Exception as error:  # any unreadable file means: take the next source
            warnings.warn(f"{'cache' if source == path else 'shipped'} file {source} is "
                          f"corrupt or stale ({error}); not using it", stacklevel=2)
            continue
        if source != path:
            copy_atomically(source, path)
        return model.eval()
    model = recipe.build()
    _train(model, recipe, progress)
    payload = {"digest": recipe.digest(), "state_dict": model.state_dict()}
    write_atomically(path, lambda f: torch.save(payload, f))
    return model.eval()


def ship(name: str, *, progress: bool = True) -> Path:
    """Ship the weights of recipe ``name`` as this machine has them: the cached model
    (trained here first if there is none, :func:`pretrained`) is copied to
    :func:`shipped_path`, and the files of earlier versions of the recipe are deleted.
    Run it when a recipe or the labkit version changes, then re-execute the labs."""
    pretrained(name, progress=progress)
    target = shipped_path(name)
    versions = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}\.pt")
    for stale in SHIPPED.glob("*.pt"):
        if versions.fullmatch(stale.name) and stale != target:
            stale.unlink()
    copy_atomically(cache_path(name), target)
    return target


def copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` with :func:`labkit.files.write_atomically`."""
    write_atomically(target, source.read_bytes())


def _written_by_labkit(path: Path) -> bool:
    """Whether ``path`` is named as labkit names its cache files (or their temporary
    files, :func:`labkit.files.write_atomically`'s ``<name><8 characters>.tmp``)."""
    kinds = "|".join(re.escape(kind) for kind in (*sorted(RECIPES), *CACHE_KINDS_EXTRA))
    suffixes = "|".join(re.escape(suffix) for suffix in CACHE_SUFFIXES)
    pattern = rf"(?:{kinds})-[0-9a-f]{{16}}(?:{suffixes})(?:[a-z0-9_]{{8}}\.tmp)?"
    return path.is_file() and re.fullmatch(pattern, path.name) is not None


def clear_cache() -> list[Path]:
    """Delete the files labkit wrote into the cache folder (models, latency tables) and
    nothing else; returns the paths removed."""
    folder = cache_dir()
    removed = sorted(p for p in folder.iterdir() if _written_by_labkit(p)) \
        if folder.is_dir() else []
    for path in removed:
        path.unlink()
    return removed
