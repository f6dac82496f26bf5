"""PNG figures of a comparison: per-step curves (mean over seeds, with a 95% t interval or min-max band) and the
EGSW alpha x P heatmap; matplotlib with the Agg backend, about 100 dpi.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 90

# one curve per method: {method: (steps, mean, low, high)}, each a list of the same length
Curves = dict[str, tuple[list[float], list[float], list[float], list[float]]]


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method, so that a method keeps its colour in panels where others are absent."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {method: cycle[i % len(cycle)] for i, method in enumerate(methods)}


def save_png(fig, path: str | Path) -> Path:
    """Save as a 256-colour PNG: line plots lose nothing visible and the file is 3-4 times smaller (git)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, format="PNG", optimize=True)
    return Path(path)


def _draw_curves(ax, curves: Curves, title: str, ylabel: str, colors: dict[str, str] | None = None) -> None:
    colors = colors or method_colors(list(curves))
    for method, (steps, mean, low, high) in curves.items():
        ax.plot(steps, mean, label=method, linewidth=1.5, color=colors[method])
        ax.fill_between(steps, low, high, color=colors[method], alpha=0.2, linewidth=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no run logged this metric", ha="center", va="center", transform=ax.transAxes)


def plot_curves(
    curves: Curves, path: str | Path, title: str, ylabel: str, colors: dict[str, str] | None = None
) -> Path:
    """One metric against step: the mean over seeds as a line, (low, high) of each curve as a band."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _draw_curves(ax, curves, title, ylabel, colors)
    fig.tight_layout()
    return save_png(fig, path)


def plot_curve_grid(
    panels: Sequence[tuple[str, str, Curves]],
    path: str | Path,
    suptitle: str = "",
    colors: dict[str, str] | None = None,
) -> Path:
    """Several metrics side by side (2 columns): `panels` is a list of (title, ylabel, curves)."""
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.4 * rows), squeeze=False)
    for ax, (title, ylabel, curves) in zip(axes.flat, panels):
        _draw_curves(ax, curves, title, ylabel, colors)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def plot_heatmap(
    rows: Sequence[float],
    cols: Sequence[float],
    cells: dict[tuple[float, float], tuple[float, float | None]],
    path: str | Path,
    title: str,
    row_label: str = "alpha",
    col_label: str = "P (temperature)",
) -> Path:
    """A rows x cols grid coloured by `cells[(row, col)] = (mean, std)`; cells that were not run stay blank."""
    import numpy as np

    grid = np.full((len(rows), len(cols)), np.nan)
    for (r, c), (mean, _) in cells.items():
        if r in rows and c in cols and mean is not None:
            grid[list(rows).index(r), list(cols).index(c)] = mean
    fig, ax = plt.subplots(figsize=(6, 4.5))
    finite = grid[np.isfinite(grid)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.01, vmax + 0.01
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax, label="final accuracy")
    for (r, c), (mean, std) in cells.items():
        if r in rows and c in cols and mean is not None:
            text = f"{mean:.3f}" + (f"\n±{std:.3f}" if std else "")
            shade = (mean - vmin) / (vmax - vmin)
            ax.text(
                list(cols).index(c),
                list(rows).index(r),
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="black" if shade > 0.6 else "white",
            )
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
    ax.set_yticks(range(len(rows)), [f"{r:g}" for r in rows])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
