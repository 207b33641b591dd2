"""Draw the figures of the lecture chapters into ``book/figures/generated/``.

Every figure is computed by the ``labkit`` function that the chapter describes, on a
small seeded tensor or on the digits model of the labs (``labkit.zoo``), so a figure
changes when the code does. ``make book`` runs this script before the build:

    python book/figures/make_figures.py            # every figure
    python book/figures/make_figures.py agp_schedule eie_format   # some of them

SVG output, with the text as paths, a fixed hash salt for the element ids and no
timestamp; one thread and the same seed before each figure, so a rerun gives the same
files byte for byte (``tests/course/test_figures.py`` checks it).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("svg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

from labkit import data, measure, viz, zoo  # noqa: E402
from labkit.hardware import eie, nm, sparseconv  # noqa: E402
from labkit.pruning import channels, criteria, schedule, sensitivity  # noqa: E402
from labkit.pruning.granularity import GRANULARITIES, granularity_mask, mask_from_scores  # noqa: E402

OUT = Path(__file__).resolve().parent / "generated"
KEPT, PRUNED = "#1f5f99", "#e8e8e8"
MASK_COLORS = ListedColormap([PRUNED, KEPT])
ACCENT = "#c2410c"
plt.rcParams.update({
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "labkit",
    "svg.fonttype": "path", "xtick.labelsize": "medium", "ytick.labelsize": "medium",
    "savefig.dpi": "figure",
})

FIGURES: dict[str, Callable[[], plt.Figure]] = {}


def figure(function: Callable[[], plt.Figure]) -> Callable[[], plt.Figure]:
    FIGURES[function.__name__] = function
    return function


def _digits_model():
    return zoo.pretrained("vgg-digits", progress=False).eval()


def _grid(ax, array, cmap=MASK_COLORS, vmin=0, vmax=1):
    ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _box(ax, xy, text, width=2.4, height=0.9, color="#dbeafe"):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.05", facecolor=color, edgecolor="#334155"))
    ax.text(x, y, text, ha="center", va="center")


def _arrow(ax, start, end, text="", offset=(0, 0.25), curve=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14,
                                 color="#334155", connectionstyle=f"arc3,rad={curve}"))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text,
                ha="center", va="center", fontsize=9)


def _diagram_axes(fig, xlim, ylim):
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return ax


# Pruning granularity -------------------------------------------------------------------

@figure
def granularity_masks():
    """The five granularities on one conv weight (8 output x 4 input channels, 3x3) at 50%."""
    weight = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, 5, figsize=(9, 3.2))
    for ax, granularity in zip(axes, GRANULARITIES, strict=True):
        mask = granularity_mask(weight, 0.5, granularity)
        # rows: output channels; columns: the 3x3 kernels of the input channels side by side
        picture = mask.permute(0, 2, 1, 3).reshape(8 * 3, 4 * 3).float()
        _grid(ax, picture)
        for i in range(1, 4):
            ax.axvline(3 * i - 0.5, color="white", lw=2)
        for o in range(1, 8):
            ax.axhline(3 * o - 0.5, color="white", lw=2)
        ax.set_title(f"{granularity}\n{1 - mask.float().mean():.0%} zeros")
    axes[0].set_ylabel("output channel (3 kernel rows each)")
    axes[2].set_xlabel("input channel (3 kernel columns each)")
    fig.tight_layout()
    return fig


@figure
def granularity_nm():
    """2:4 groups of four along the reduction dimension of a linear weight."""
    weight = torch.randn(4, 12, generator=torch.Generator().manual_seed(1))
    mask = granularity_mask(weight, 0.5, "pattern")
    fig, ax = plt.subplots(figsize=(7.5, 2.9))
    _grid(ax, mask.float())
    for (row, col), value in np.ndenumerate(weight.numpy()):
        ax.text(col, row, f"{value:+.1f}", ha="center", va="center", fontsize=8,
                color="white" if mask[row, col] else "#6b7280")
    for group in range(1, 3):
        ax.axvline(4 * group - 0.5, color=ACCENT, lw=2.5)
    ax.set_xlabel("input dimension $i$ (reduction), groups of $M = 4$")
    ax.set_ylabel("output $o$")
    ax.set_title("2:4 pattern: the two largest |w| of every group of four are kept")
    fig.tight_layout()
    return fig


# Pruning criteria ----------------------------------------------------------------------

def _head_importances():
    """Magnitude, OBD (exact Hessian diagonal), Taylor and random scores of the head."""
    model = _digits_model()
    _, val_loader, _ = data.load("digits").loaders(batch_size=128)
    weight = model.classifier.weight
    loss = criteria.dataset_loss(model, val_loader)
    hessian = criteria.exact_hessian_diagonal(loss, weight)
    taylor = criteria.taylor_importance(model, val_loader, {"classifier.weight": weight})
    return {
        "magnitude |w|": criteria.magnitude(weight),
        "OBD ½ h w²": criteria.obd_importance(weight, hessian),
        "Taylor |w g|": taylor["classifier.weight"],
        "random": criteria.random_importance(weight, seed=0),
    }


@figure
def criteria_masks():
    """The keep-masks of four criteria at 50% on the linear head of the digits model."""
    scores = _head_importances()
    fig, axes = plt.subplots(len(scores), 1, figsize=(8, 4.6))
    reference = mask_from_scores(scores["magnitude |w|"], 0.5)
    for ax, (name, score) in zip(axes, scores.items(), strict=True):
        mask = mask_from_scores(score, 0.5)
        _grid(ax, mask.float())
        agreement = (mask == reference).float().mean()
        ax.set_title(f"{name}: same decision as magnitude for {agreement:.0%} of the weights",
                     loc="left")
    axes[-1].set_xlabel("input feature (64 channels)  ·  one row per class  ·  "
                        "blue: kept, grey: pruned at 50%")
    fig.tight_layout()
    return fig


@figure
def criteria_scatter():
    """Magnitude against the OBD saliency of the same weights."""
    scores = _head_importances()
    magnitude, obd = scores["magnitude |w|"].flatten(), scores["OBD ½ h w²"].flatten()
    keep_m = mask_from_scores(magnitude, 0.5)
    keep_o = mask_from_scores(obd, 0.5)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for selection, label, color in [(keep_m & keep_o, "kept by both", KEPT),
                                    (~keep_m & ~keep_o, "pruned by both", "#9ca3af"),
                                    (keep_m ^ keep_o, "the criteria disagree", ACCENT)]:
        ax.scatter(magnitude[selection], obd[selection], s=9, color=color,
                   label=f"{label} ({int(selection.sum())})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("magnitude $|w_i|$")
    ax.set_ylabel(r"OBD saliency $\frac{1}{2} h_{ii} w_i^2$")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


# Pruning neurons -----------------------------------------------------------------------

@figure
def channel_removal():
    """What removing output channel j of conv_i removes: a filter, a BN entry, an input slice."""
    fig = plt.figure(figsize=(8.5, 3.2))
    ax = _diagram_axes(fig, (0, 17), (1.4, 7.8))
    removed = 2

    def matrix(x0, rows, cols, label, row=None, col=None):
        for r in range(rows):
            for c in range(cols):
                hit = (row is not None and r == row) or (col is not None and c == col)
                ax.add_patch(Rectangle((x0 + c * 0.55, 5.6 - r * 0.55), 0.5, 0.5,
                                       facecolor=ACCENT if hit else KEPT,
                                       alpha=1 if hit else 0.75, edgecolor="white"))
        ax.text(x0 + cols * 0.275, 6.5, label, ha="center")

    matrix(0.5, 6, 4, "conv$_i$ filters\n$c_i \\times c_{i-1}$", row=removed)
    matrix(4.8, 6, 1, "bn$_i$\n$\\gamma, \\beta, \\mu, \\sigma^2$", row=removed)
    matrix(7.8, 5, 6, "conv$_{i+1}$ weights\n$c_{i+1} \\times c_i$", col=removed)
    ax.text(12.0, 4.6, f"channel $j = {removed}$ (orange) is removed:\n"
            "row $j$ of conv$_i$,\nentry $j$ of bn$_i$,\ncolumn $j$ of conv$_{i+1}$.\n\n"
            "What is left is a smaller\ndense network.", va="top")
    _arrow(ax, (2.9, 2.3), (4.7, 2.3), "output $j$")
    _arrow(ax, (5.5, 2.3), (7.7, 2.3), "BN, ReLU")
    return fig


@figure
def channel_macs():
    """MACs of the digits model against the channel pruning ratio, counted and predicted."""
    model = channels.apply_channel_sorting(_digits_model())
    inputs = torch.zeros(1, 1, 8, 8)
    dense = measure.count_macs(model, inputs)
    ratios = np.linspace(0, 0.9, 10)
    counted = [measure.count_macs(channels.channel_prune(model, float(r)), inputs) / dense
               for r in ratios]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ratios, counted, "o-", color=KEPT, label="counted (FlopCounterMode), digits VGG")
    ax.plot(ratios, (1 - ratios) ** 2, "--", color=ACCENT, label="$(1 - r)^2$")
    ax.plot(ratios, 1 - ratios, ":", color="#6b7280", label="$1 - r$")
    ax.set_xlabel("channel pruning ratio $r$ (every conv)")
    ax.set_ylabel("MACs / dense MACs")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


# Pruning ratio -------------------------------------------------------------------------

@figure
def sensitivity_curves():
    """Sensitivity scan of the digits model on the validation split, and the threshold rule."""
    model = _digits_model()
    _, val_loader, _ = data.load("digits").loaders(batch_size=128)
    scan = sensitivity.sensitivity_scan(model, val_loader, progress=False)
    threshold = scan.dense_accuracy - 2
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for layer in scan.accuracies:
        xs, ys = scan.curve(layer)
        line, = ax.plot(xs, ys, "o-", ms=3, label=layer)
        chosen = max((x for x, y in zip(xs, ys, strict=True) if y >= threshold), default=0)
        ax.plot([chosen], [threshold], "v", ms=8, color=line.get_color())
    ax.axhline(threshold, color="#6b7280", ls="--", lw=1)
    ax.text(0.01, threshold - 7, "dense accuracy − 2 points", color="#6b7280", fontsize=9)
    ax.set_xlabel("sparsity of the one pruned layer (others dense)")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(frameon=False, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig


@figure
def index_overhead():
    """Bits per weight of a 64 x 576 layer, dense, CSR and bitmask, against sparsity."""
    weight = torch.randn(64, 576, generator=torch.Generator().manual_seed(2))
    sparsities = np.linspace(0, 0.98, 50)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for index, label, style in [(None, "dense", ":"), ("csr", "CSR (32-bit indices)", "-"),
                                ("bitmask", "bitmask", "--")]:
        bits = []
        for s in sparsities:
            pruned = weight * mask_from_scores(weight.abs(), float(s))
            bits.append(measure.tensor_size_bits(pruned, 32, index) / weight.numel())
        ax.plot(sparsities, bits, style, label=label)
    ax.axvline(0.5, color="#6b7280", lw=0.8)
    ax.set_xlabel("sparsity")
    ax.set_ylabel("bits per weight of the layer")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


# Automatic pruning ---------------------------------------------------------------------

@figure
def amc_loop():
    """AMC: a DDPG agent sets one layer's ratio at a time; the reward comes at the end."""
    fig = plt.figure(figsize=(8.5, 3.4))
    ax = _diagram_axes(fig, (0, 17), (0, 7))
    _box(ax, (3, 5.2), "DDPG agent\nactor $\\mu(s)$, critic $Q(s,a)$", 4.6, 1.5)
    _box(ax, (12.5, 5.2), "environment: layer $t$\nof the network", 4.6, 1.5, "#fde68a")
    _box(ax, (12.5, 1.5), "pruned network\n(every layer done)", 4.6, 1.3, "#e5e7eb")
    _box(ax, (3, 1.5), "reward $R = -$error\n(validation subset)", 4.6, 1.3, "#dcfce7")
    _arrow(ax, (5.4, 5.6), (10.1, 5.6), "action $a_t$: ratio of layer $t$,\n"
           "raised to $r_{\\min}$ if the MAC budget needs it", (0, 0.55))
    _arrow(ax, (10.1, 4.8), (5.4, 4.8), "state $s_{t+1}$: next layer's shape, MACs", (0, -0.4))
    _arrow(ax, (12.5, 4.4), (12.5, 2.2), "after layer $L$", (1.2, 0))
    _arrow(ax, (10.1, 1.5), (5.4, 1.5), "evaluate, no finetune", (0, 0.3))
    _arrow(ax, (3, 2.2), (3, 4.4), "update", (-0.8, 0))
    return fig


@figure
def netadapt_step():
    """One NetAdapt iteration: one candidate per layer, each meeting the tighter budget."""
    fig = plt.figure(figsize=(8.5, 3.6))
    ax = _diagram_axes(fig, (0, 17), (0, 7.4))
    _box(ax, (2.2, 3.7), "network\nlatency $R_{i-1}$", 3.2, 1.3)
    candidates = ["shrink conv0", "shrink conv1", "shrink conv2", "shrink conv3"]
    for k, name in enumerate(candidates):
        y = 6.2 - 1.65 * k
        _box(ax, (7.4, y), f"{name} just enough\nthat the table says $\\leq C_i$", 4.4, 1.2,
             "#fde68a")
        _arrow(ax, (3.8, 3.7), (5.2, y))
        _arrow(ax, (9.6, y), (11.4, 3.7))
    ax.text(10.9, 6.7, "short finetune\neach candidate", fontsize=9, ha="center")
    _box(ax, (13.6, 3.7), "keep the most\naccurate one:\nlatency $\\leq C_i$", 4.2, 1.7,
         "#dcfce7")
    ax.text(8.5, 0.1, "$C_i = R_{i-1} - \\Delta R$; repeat until the latency budget $B$ is met",
            ha="center", fontsize=9)
    return fig


# Finetuning ----------------------------------------------------------------------------

@figure
def finetune_loop():
    """Iterative pruning along the lecture's schedule, with a finetune after every step."""
    fig = plt.figure(figsize=(9, 2.6))
    ax = _diagram_axes(fig, (0, 18.8), (0.2, 5.2))
    _box(ax, (1.4, 3.2), "train\ndense", 2.2, 1.3, "#e5e7eb")
    x = 1.4
    for sparsity in schedule.LECTURE_SPARSITIES:
        x_next = x + 3.1
        _arrow(ax, (x + 1.1, 3.2), (x_next - 1.1, 3.2))
        _box(ax, (x_next, 3.2), f"prune to {sparsity:.0%}\n↓\nfinetune", 2.2, 1.7, "#fde68a")
        x = x_next
    ax.text(9.4, 0.8, "each step re-ranks the surviving weights by magnitude; "
            "masks are re-applied after every optimizer step", ha="center", fontsize=9)
    return fig


@figure
def agp_schedule():
    """The AGP sparsity curve and the share of surviving weights each step removes."""
    return viz.agp_schedule(10, 0.9)


# Hardware ------------------------------------------------------------------------------

EIE_WEIGHT = torch.tensor([
    [0.0, 0.0, 1.5, 0.0, 0.0, 0.0, -0.4, 0.0],
    [0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [-1.1, 0.0, 0.0, 0.0, 0.0, 0.7, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 1.2],
    [0.0, 0.0, 0.0, -0.6, 0.0, 0.0, 0.0, 0.0],
    [0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.9],
    [0.4, 0.0, 0.0, 0.0, -1.1, 0.0, 0.0, 0.0],
])


@figure
def eie_format():
    """An 8 x 8 pruned matrix on 4 PEs, and what PE 0 stores in EIE's format."""
    num_pes = 4
    encoded = eie.encode_eie(EIE_WEIGHT, num_pes=num_pes)
    pe_colors = ["#1f5f99", "#c2410c", "#15803d", "#7c3aed"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8),
                                      gridspec_kw={"width_ratios": [1, 1.25]})
    left.set_xlim(-0.5, 7.5)
    left.set_ylim(7.5, -0.5)
    for (row, col), value in np.ndenumerate(EIE_WEIGHT.numpy()):
        color = pe_colors[row % num_pes]
        left.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, facecolor=color,
                                 alpha=0.85 if value else 0.08, edgecolor="white"))
        if value:
            left.text(col, row, f"{value:g}", ha="center", va="center", color="white",
                      fontsize=9)
    left.set_xticks(range(8))
    left.set_yticks(range(8), [f"row {r}: PE{r % num_pes}" for r in range(8)], fontsize=9)
    left.set_xlabel("column $j$ (input $x_j$)")
    left.set_title("rows interleaved over 4 PEs")
    pe = encoded.pes[0]
    rows = [("v (4-bit code)", pe.codes.tolist()), ("z (zeros before)", pe.zero_runs.tolist()),
            ("column pointers", pe.column_pointers.tolist())]
    right.axis("off")
    right.set_title("PE0 stores (its rows 0 and 4, column by column)")
    for k, (label, values) in enumerate(rows):
        y = 0.8 - 0.28 * k
        right.text(0.0, y, label, ha="left", va="center", transform=right.transAxes)
        for i, value in enumerate(values):
            right.text(0.42 + 0.06 * i, y, str(value), ha="center", va="center",
                       transform=right.transAxes, family="monospace",
                       bbox={"boxstyle": "square,pad=0.3", "facecolor": "#f1f5f9",
                             "edgecolor": "#94a3b8"})
    codebook = ", ".join(f"{value:.2g}" for value in encoded.codebook.tolist()[1:]
                         if value != 0) or "-"
    right.text(0.0, 0.02, f"codebook (index 0 is zero):\n{codebook}", fontsize=9,
               transform=right.transAxes)
    fig.tight_layout()
    return fig


@figure
def nm_layout():
    """A 2:4 matrix, its R x C/2 values and the 2-bit position of each value."""
    dense = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    pruned = nm.prune_2_4(dense)
    compressed = nm.compress_2_4(pruned)
    positions = nm.unpack_positions(compressed.metadata, 4)
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.6), gridspec_kw={"width_ratios": [8, 4, 4]})
    panels = [(pruned, "2:4 sparse $W$ (4 × 8)", "{:+.1f}"),
              (compressed.values, "values (4 × 4)", "{:+.1f}"),
              (positions, "metadata (2-bit positions)", "{:d}")]
    for ax, (matrix, title, fmt) in zip(axes, panels, strict=True):
        _grid(ax, (matrix != 0).float() if matrix is pruned else torch.ones(matrix.shape))
        for (row, col), value in np.ndenumerate(matrix.numpy()):
            ax.text(col, row, fmt.format(value) if (value or matrix is positions) else "0",
                    ha="center", va="center", fontsize=9,
                    color="white" if (value or matrix is not pruned) else "#6b7280")
        ax.set_title(title)
    for ax, width in [(axes[0], 4), (axes[1], 2), (axes[2], 2)]:
        ax.axvline(width - 0.5, color=ACCENT, lw=2.5)
    fig.tight_layout()
    return fig


@figure
def kernel_map():
    """The kernel map of a tiny point cloud (one z-plane), for three of the 27 offsets."""
    coords = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0], [3, 1, 0], [3, 2, 0],
                           [0, 2, 0], [2, 3, 0]])
    kmap = sparseconv.build_kernel_map(coords, 3)
    wanted = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.6), layout="constrained")
    for ax, offset in zip(axes, wanted, strict=True):
        index = next(n for n, d in enumerate(kmap.offsets.tolist()) if tuple(d) == offset)
        pairs = kmap.pairs[index]
        ax.set_xlim(-0.6, 3.6)
        ax.set_ylim(-0.6, 3.6)
        ax.set_aspect("equal")
        ax.set_xticks(range(4))
        ax.set_yticks(range(4))
        ax.grid(True, color="#e5e7eb")
        for n, (x, y, _) in enumerate(coords.tolist()):
            ax.add_patch(Rectangle((x - 0.4, y - 0.4), 0.8, 0.8, facecolor="#dbeafe",
                                   edgecolor="#334155"))
            ax.text(x, y, str(n), ha="center", va="center")
        for i, o in pairs.tolist():
            (xi, yi, _), (xo, yo, _) = coords[i].tolist(), coords[o].tolist()
            if (xi, yi) != (xo, yo):
                ax.add_patch(FancyArrowPatch((xi, yi), (xo, yo), arrowstyle="-|>",
                                             mutation_scale=12, color=ACCENT,
                                             shrinkA=9, shrinkB=9))
        listed = [f"({i},{o})" for i, o in pairs.tolist()]
        lines = [", ".join(listed[start:start + 4]) for start in range(0, len(listed), 4)]
        ax.set_title("\n".join([f"$d = {offset}$: {len(pairs)} pairs", *lines]), fontsize=9)
        ax.set_xlabel("x")
    axes[0].set_ylabel("y")
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"figures to draw (default all: {list(FIGURES)})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT})")
    arguments = parser.parse_args(argv)
    names = arguments.names or list(FIGURES)
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figures {unknown}; choose from {list(FIGURES)}")
    arguments.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the same sums in the same order on every machine
    for name in names:
        torch.manual_seed(0)  # each figure from the same seed, whichever are drawn
        fig = FIGURES[name]()
        fig.savefig(arguments.out / f"{name}.svg", metadata={"Date": None})
        plt.close(fig)
        print(f"wrote {arguments.out / name}.svg")


if __name__ == "__main__":
    main()
