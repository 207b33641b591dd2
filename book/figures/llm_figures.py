"""Draw the figures of the chapter on pruning language models into ``book/figures/llm/``.

Each figure is computed by :mod:`labkit.pruning.llm` on a small seeded layer, so it changes
when the code does. Regenerate them (a few seconds) with

    python book/figures/llm_figures.py

SVG output with the text as paths and a fixed hash salt, so a rerun gives the same files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("svg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from labkit.pruning import llm  # noqa: E402

OUT = Path(__file__).resolve().parent / "llm"
MASK_COLORS = ListedColormap(["#e8e8e8", "#1f5f99"])
METHOD_COLORS = {"magnitude": "#6b7280", "wanda": "#c2410c", "sparsegpt": "#1f5f99"}
plt.rcParams.update({
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "labkit",
    "svg.fonttype": "path",
})


def toy_layer(rows: int = 64, columns: int = 128, tokens: int = 2048,
              seed: int = 0) -> tuple[torch.Tensor, llm.InputStatistics]:
    """A random layer whose inputs are correlated and have a few outlier features, the
    two properties of a transformer's activations that the methods react to."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=generator) / columns ** 0.5
    mixing = torch.randn(columns, columns, generator=generator) / columns ** 0.5
    inputs = torch.randn(tokens, columns, generator=generator) @ (torch.eye(columns) + mixing)
    inputs[:, :4] *= 20.0
    x = inputs.double()
    return weight, llm.InputStatistics(x.T @ x, tokens)


def wanda_against_magnitude() -> plt.Figure:
    """Masks of a 12 x 24 slice at 50% per row: magnitude, then Wanda, and the norms."""
    weight, statistics = toy_layer()
    weight, norms = weight[:12, :24], statistics.norms[:24].float()
    masks = {"magnitude: $|W_{ij}|$": llm.mask(weight.abs(), sparsity=0.5),
             r"Wanda: $|W_{ij}|\,\|X_j\|_2$": llm.wanda_mask(weight, norms, 0.5)}
    fig, axes = plt.subplots(3, 1, figsize=(7, 5.4), layout="constrained",
                             gridspec_kw={"height_ratios": [1, 3, 3]}, sharex=True)
    axes[0].bar(range(24), norms, color="#c2410c", width=0.8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\|X_j\|_2$")
    axes[0].set_title("input norms: features 0-3 are outliers")
    for ax, (title, keep) in zip(axes[1:], masks.items(), strict=True):
        ax.imshow(keep, cmap=MASK_COLORS, vmin=0, vmax=1, aspect="auto")
        ax.set_title(f"{title}, 50% of every row kept (blue)")
        ax.set_ylabel("output row $i$")
    axes[-1].set_xlabel("input feature $j$")
    return fig


def reconstruction_against_sparsity() -> plt.Figure:
    """Layer reconstruction error of the three methods from 10% to 90% sparsity."""
    weight, statistics = toy_layer()
    sparsities = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for method, color in METHOD_COLORS.items():
        errors = []
        for sparsity in sparsities:
            pruned, _ = llm.prune_layer(weight, statistics, method, sparsity=sparsity)
            errors.append(llm.reconstruction_error(weight, pruned, statistics.hessian))
        ax.plot([100 * s for s in sparsities], errors, marker="o", color=color, label=method)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the layer (%)")
    ax.set_ylabel(r"$\|WX - \widehat{W}X\|^2 / n$")
    ax.set_title("one layer with correlated, outlier-heavy inputs")
    ax.legend()
    return fig


FIGURES = {"wanda_against_magnitude": wanda_against_magnitude,
           "reconstruction_against_sparsity": reconstruction_against_sparsity}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        fig = draw()
        fig.savefig(OUT / f"{name}.svg", metadata={"Date": None})
        plt.close(fig)
        print(f"wrote {OUT / name}.svg")


if __name__ == "__main__":
    main()
