"""What the benchmarks measure on: sizes, sparsities, timing budget, and the models.

Three presets: :func:`full` (``make bench``), :func:`quick` (development: short
timings, smaller sweeps, one run of each lab) and :func:`smoke` (the test suite: tiny
models and millisecond timings; it checks that the harness runs, its numbers mean
nothing).

The two models of the labs' world: the **lab model**, the pretrained digits VGG of
``labkit.zoo.pretrained("vgg-digits")`` on ``1 x 8 x 8`` inputs, and the **CIFAR
VGG**, :class:`labkit.models.VGG` with the original lab's widths on ``3 x 32 x 32``
inputs and random weights (seeded): pruning speed and MACs do not depend on what the
weights learned. For residual connections, the **CIFAR ResNet**: :class:`labkit.models.ResNet`
with stages of ``resnet_widths`` channels, ``resnet_blocks`` basic blocks each.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from labkit import zoo
from labkit.models import CIFAR_WIDTHS, DIGITS_WIDTHS, VGG, ResNet, randomize_batchnorms

ROOT = Path(__file__).resolve().parents[1]
LABS = tuple(sorted((ROOT / "labs").glob("*.ipynb")))
RESULTS = ROOT / "benchmarks" / "results"
LAB_MODEL = "vgg-digits"
LAB_INPUT = (1, 8, 8)


@dataclass(frozen=True)
class Config:
    """Every size and budget of one benchmark run.

    ``min_run_time``: seconds of timing of each candidate (at least one call per round),
    spread over ``rounds`` alternating rounds; ``threads``: torch threads of every timing.
    """

    threads: int = 1
    min_run_time: float = 2.0
    rounds: int = 4
    seed: int = 0
    pretrained: bool = True
    cifar_widths: tuple[int | str, ...] = CIFAR_WIDTHS
    cifar_resolution: int = 32
    resnet_widths: tuple[int, ...] = (64, 128, 256)
    resnet_blocks: int = 2
    batch_sizes: tuple[int, ...] = (1, 64)
    mask_sparsities: tuple[float, ...] = (0.3, 0.5, 0.9)
    timing_sparsity: float = 0.5
    channel_ratios: tuple[float, ...] = (0.3, 0.5)
    speedup_ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    csr_size: int = 1024
    csr_columns: tuple[int, ...] = (1, 64)
    csr_sparsities: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
    grid_size: int = 40
    dense_grid_sizes: tuple[int, ...] = (24, 32, 40, 48)
    conv_channels: int = 16
    occupancies: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)
    point_cloud_points: int = 20_000
    voxel_size: float = 0.05
    labs: tuple[Path, ...] = field(default=LABS)
    labs_runs: int = 3
    grading_submissions: int = 40
    grading_jobs: tuple[int, ...] = (1, 2)
    grading_shards: tuple[int, ...] = (1, 2, 4)
    grading_every_mode: bool = True

    def __post_init__(self) -> None:
        for name in ("threads", "rounds", "csr_size", "grid_size", "conv_channels",
                     "labs_runs", "cifar_resolution", "point_cloud_points", "resnet_blocks",
                     "grading_submissions"):
            _check_positive_int(name, getattr(self, name))
        for value in (*self.batch_sizes, *self.csr_columns, *self.dense_grid_sizes,
                      *self.resnet_widths):
            _check_positive_int("batch_sizes, csr_columns, dense_grid_sizes and resnet_widths",
                                value)
        for name in ("grading_jobs", "grading_shards"):
            counts = getattr(self, name)
            if not counts:
                raise ValueError(f"{name} must name at least one count, got {counts!r}")
            for count in counts:
                _check_positive_int(name, count)
        _check_range("min_run_time", self.min_run_time, lambda v: v > 0, "(0, inf) seconds")
        _check_range("voxel_size", self.voxel_size, lambda v: v > 0, "(0, inf)")
        for name in ("mask_sparsities", "channel_ratios", "speedup_ratios", "csr_sparsities"):
            for value in getattr(self, name):
                _check_range(name, value, lambda v: 0 <= v < 1, "[0, 1)")
        _check_range("timing_sparsity", self.timing_sparsity, lambda v: 0 <= v < 1, "[0, 1)")
        for value in self.occupancies:
            _check_range("occupancies", value, lambda v: 0 < v <= 1, "(0, 1]")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_range(name: str, value: float, inside: Callable[[float], bool],
                 interval: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not inside(value):
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def full() -> Config:
    """The run behind the committed results and the book's appendix."""
    return Config()


def quick() -> Config:
    """For development: short timings, smaller sweeps, one run of each lab."""
    return Config(min_run_time=0.3, rounds=3, batch_sizes=(1, 16), mask_sparsities=(0.5,),
                  csr_size=512, csr_sparsities=(0.5, 0.9, 0.99), dense_grid_sizes=(32, 40),
                  occupancies=(0.01, 0.1), labs_runs=1, grading_submissions=8)


def smoke(labs: tuple[Path, ...] = ()) -> Config:
    """Tiny models and millisecond timings: checks that every comparison runs."""
    return Config(min_run_time=0.001, rounds=1, pretrained=False,
                  cifar_widths=(8, "M", 16, "M"), cifar_resolution=8, batch_sizes=(1, 2),
                  resnet_widths=(4, 8), resnet_blocks=1,
                  mask_sparsities=(0.5,), channel_ratios=(0.5,), speedup_ratios=(0.5,),
                  csr_size=32, csr_columns=(2,), csr_sparsities=(0.5, 0.9), grid_size=6,
                  dense_grid_sizes=(6,),
                  conv_channels=2, occupancies=(0.2,), point_cloud_points=200,
                  voxel_size=0.5, labs=labs, labs_runs=1, grading_submissions=1,
                  grading_jobs=(2,), grading_shards=(2,), grading_every_mode=False)


PRESETS = {"full": full, "quick": quick, "smoke": smoke}


def with_options(config: Config, **options) -> Config:
    """``config`` with the options given on the command line (``None`` = keep)."""
    return replace(config, **{key: value for key, value in options.items() if value is not None})


def lab_model(config: Config) -> VGG:
    """The digits VGG the labs prune: pretrained, or random weights in the smoke preset."""
    if config.pretrained:
        return zoo.pretrained(LAB_MODEL, progress=False)
    return seeded(lambda: VGG(DIGITS_WIDTHS), config.seed)


def cifar_model(config: Config) -> VGG:
    """The original lab's VGG widths on 3-channel images, random weights from ``seed``."""
    return seeded(lambda: VGG(config.cifar_widths, in_channels=3), config.seed)


def cifar_resnet(config: Config) -> ResNet:
    """A CIFAR-sized :class:`labkit.models.ResNet` (3-channel input), random weights and
    trained-looking BatchNorms from ``seed``: BatchNorms at their initial values would hide
    a channel mixed up in the surgery."""
    return seeded(lambda: randomize_batchnorms(
        ResNet(config.resnet_widths, blocks=config.resnet_blocks, in_channels=3)), config.seed)


def seeded(build, seed: int) -> nn.Module:
    """``build()`` under ``torch.manual_seed(seed)``, the global random state restored."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build().eval()


def lab_inputs(config: Config, batch: int) -> torch.Tensor:
    """Random digits-shaped inputs, ``batch x 1 x 8 x 8``."""
    return torch.randn(batch, *LAB_INPUT, generator=torch.Generator().manual_seed(config.seed))


def cifar_inputs(config: Config, batch: int) -> torch.Tensor:
    """Random CIFAR-shaped inputs, ``batch x 3 x R x R``."""
    size = config.cifar_resolution
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(config.seed))
