"""Pretrained dense models, trained on first use and cached.

Nothing is downloaded: ``pretrained(name)`` trains the model on this machine (a few
seconds on a CPU for the digits models) and caches it under ``$LABKIT_CACHE``
(default ``~/.cache/labkit``). The cache file is named by a hash of the model's
recipe and the labkit version, written atomically, and holds the hash again; a file
that is corrupt or stale is retrained with a warning, never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from labkit import __version__
from labkit.data import load
from labkit.models import DIGITS_WIDTHS, MLP, VGG
from labkit.training import TRAIN_LR, train


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

    def build(self) -> nn.Module:
        torch.manual_seed(self.seed)
        return ARCHITECTURES[self.architecture](**self.options)

    def digest(self) -> str:
        text = json.dumps({"recipe": asdict(self), "labkit": __version__}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"vgg": VGG, "mlp": MLP}

RECIPES: dict[str, Recipe] = {
    "vgg-digits": Recipe("vgg", options={"widths": list(DIGITS_WIDTHS)}),
    "mlp-digits": Recipe("mlp", options={"hidden": [128, 64]}),
}


def cache_dir() -> Path:
    """``$LABKIT_CACHE`` if set, else ``~/.cache/labkit``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labkit"
    return Path(os.environ.get("LABKIT_CACHE", default))


def cache_path(name: str) -> Path:
    return cache_dir() / f"{name}-{_recipe(name).digest()}.pt"


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"name must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


def pretrained(name: str = "vgg-digits", *, progress: bool = True) -> nn.Module:
    """The dense model ``name``, trained on first use, in eval mode on the CPU."""
    recipe = _recipe(name)
    path = cache_path(name)
    model = recipe.build()
    if path.exists():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload["digest"] != recipe.digest():
                raise ValueError("recipe digest differs")
            model.load_state_dict(payload["state_dict"])
            return model.eval()
        except Exception as error:  # any unreadable cache file means: retrain
            warnings.warn(f"cache file {path} is corrupt or stale ({error}); retraining",
                          stacklevel=2)
            model = recipe.build()
    splits = load(recipe.dataset, seed=recipe.seed)
    train_loader, val_loader, _ = splits.loaders(recipe.batch_size, seed=recipe.seed)
    train(model, train_loader, val_loader, epochs=recipe.epochs, lr=recipe.lr,
          seed=recipe.seed, progress=progress)
    payload = {"digest": recipe.digest(), "state_dict": model.state_dict()}
    write_atomically(path, lambda f: torch.save(payload, f))
    return model.eval()


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file in ``path``'s folder, then rename it over
    ``path``: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def clear_cache() -> list[Path]:
    """Delete every cached file (models, latency tables); returns the paths removed."""
    removed = sorted([*cache_dir().glob("*.pt"), *cache_dir().glob("*.json")])
    for path in removed:
        path.unlink()
    return removed
