"""The report's figures: each draws a table from :mod:`initbench.report.tables` (or the weight
samples from :mod:`initbench.report.sources`) and measures nothing itself.

Figures are made without pyplot (no global state, no display needed); each function returns a
``matplotlib.figure.Figure``, or None when there is nothing to draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from initbench.report.runset import WeightPanel
from initbench.report.tables import CURVE_PANELS, STEP0_PANELS


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def figure_curves(bands: pd.DataFrame, arch: str, act: str, order: Sequence[str]):
    """Val accuracy, val loss and train loss per epoch: per scheme in ``order`` the mean over
    seeds, and the min-max band over seeds (:func:`~initbench.report.tables.curve_bands`)."""
    if bands.empty:
        return None
    fig = _figure(15, 4.4)
    axes = fig.subplots(1, 3)
    for color, variant in zip(_colors(len(order)), order, strict=True):
        for ax, key in zip(axes, CURVE_PANELS, strict=True):
            stats = bands[(bands["variant"] == variant) & (bands["key"] == key)]
            if stats.empty:
                continue
            n = stats["n"].iloc[0]
            ax.plot(stats["epoch"], stats["mean"], color=color, label=f"{variant} (n={n})")
            if n > 1:
                ax.fill_between(stats["epoch"], stats["min"], stats["max"], color=color, alpha=0.15)
    for ax, key in zip(axes, CURVE_PANELS, strict=True):
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key.endswith("loss") and ax.has_data():
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=7, loc="lower right")
    fig.suptitle(f"{arch}, {act}: mean over seeds (band: min-max)")
    return fig


def figure_heatmap(grid: pd.DataFrame, arch: str):
    """Scheme × activation: mean best val accuracy (:func:`~initbench.report.tables.heatmap_grid`,
    rows in its order)."""
    if grid.empty:
        return None
    schemes, acts, values = list(grid.index), list(grid.columns), grid.to_numpy(dtype=float)
    label_width = 0.075 * max(len(s) for s in schemes)
    fig = _figure(max(5.0, 2.4 + label_width + 0.9 * len(acts)), 1.4 + 0.38 * len(schemes))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(acts)), acts, rotation=30, ha="right")
    ax.set_yticks(range(len(schemes)), schemes)
    for i in range(len(schemes)):
        for j in range(len(acts)):
            if not np.isnan(values[i, j]):
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if values[i, j] < 0.6 else "black",
                )
    fig.colorbar(im, ax=ax, label="best val acc (mean over seeds)")
    ax.set_title(arch)
    return fig


def figure_step0(lines: pd.DataFrame, arch: str, act: str):
    """Step-0 activation std and gradient std against depth, per scheme
    (:func:`~initbench.report.tables.step0_lines`, schemes in its order), log y."""
    if lines.empty:
        return None
    from matplotlib.ticker import MaxNLocator

    fig = _figure(12, 4.4)
    axes = fig.subplots(1, 2)
    variants = list(dict.fromkeys(lines["variant"]))
    for color, variant in zip(_colors(len(variants)), variants, strict=True):
        layers = lines[lines["variant"] == variant]
        for ax, key in zip(axes, STEP0_PANELS, strict=True):
            raw = layers[key].to_numpy(dtype=float)
            # a log scale cannot show 0, inf or NaN: they are counted in the legend instead
            y = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)
            gone = [f"{n} zero" for n in [int((raw == 0).sum())] if n] + [
                f"{n} non-finite" for n in [int((~np.isfinite(raw)).sum())] if n
            ]
            label = f"{variant} ({', '.join(gone)})" if gone else variant
            ax.plot(layers["depth"], y, color=color, marker=".", ms=3, label=label)
    for ax, title in zip(
        axes, ("activation std (forward)", "gradient std (backward)"), strict=True
    ):
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (depth)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"{arch}, {act}: step 0 (zero and non-finite values are not drawn)")
    return fig


def figure_weights(panels: Sequence[WeightPanel], arch: str, act: str):
    """Histograms of one layer's weights at initialization and at the end, per scheme."""
    if not panels:
        return None
    fig = _figure(3.6 * len(panels), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, panel in zip(axes, panels, strict=True):
        start, end = panel.start, panel.end
        finite = np.concatenate([start[np.isfinite(start)], end[np.isfinite(end)]])
        lo, hi = (finite.min(), finite.max()) if finite.size else (-1.0, 1.0)
        if lo == hi:  # a constant init (zeros, ones): a visible bin around it
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, int(np.clip(2 * np.sqrt(start.size), 10, 60)) + 1)
        ax.hist(start[np.isfinite(start)], bins=bins, alpha=0.6, label="start")
        ax.hist(end[np.isfinite(end)], bins=bins, alpha=0.6, label="end")
        n = start.size
        shown = f"sample of {n} of {panel.numel}" if n < panel.numel else f"{n}"
        ax.set_title(f"{panel.variant}\n{panel.layer}.weight ({shown} values)", fontsize=9)
        ax.set_xlabel("weight")
        ax.legend(fontsize=7)
    fig.suptitle(f"{arch}, {act}: weights at initialization and at the end")
    return fig
