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
    (:func:`~initbench.report.tables.step0_lines`, schemes in its order), log y. Every scheme
    is drawn: a value of 0 (zeros' symmetric units) sits on a floor a decade below the panel's
    smallest positive value, a non-finite one on a ceiling a decade above its largest, each
    marked (▼ / ▲) and counted in the legend."""
    if lines.empty:
        return None
    from matplotlib.ticker import MaxNLocator

    fig = _figure(12, 4.4)
    axes = fig.subplots(1, 2)
    variants = list(dict.fromkeys(lines["variant"]))
    edges = {}
    for key in STEP0_PANELS:
        values = pd.to_numeric(lines[key], errors="coerce").to_numpy(dtype=float)
        shown = values[np.isfinite(values) & (values > 0)]
        lo, hi = (shown.min(), shown.max()) if shown.size else (1.0, 1.0)
        edges[key] = (lo / 10, hi * 10)
    for color, variant in zip(_colors(len(variants)), variants, strict=True):
        layers = lines[lines["variant"] == variant]
        for ax, key in zip(axes, STEP0_PANELS, strict=True):
            raw = layers[key].to_numpy(dtype=float)
            floor, ceiling = edges[key]
            zero, bad = raw == 0, ~np.isfinite(raw) | (raw < 0)
            y = np.where(zero, floor, np.where(bad, ceiling, raw))
            gone = [f"{n} zero ▼" for n in [int(zero.sum())] if n] + [
                f"{n} non-finite ▲" for n in [int(bad.sum())] if n
            ]
            label = f"{variant} ({', '.join(gone)})" if gone else variant
            depth = layers["depth"].to_numpy()
            ax.plot(depth, y, color=color, marker=".", ms=3, label=label,
                    ls="--" if gone and (zero | bad).all() else "-")  # fmt: skip
            if zero.any():
                ax.plot(depth[zero], y[zero], ls="none", marker="v", color=color, ms=6)
            if bad.any():
                ax.plot(depth[bad], y[bad], ls="none", marker="^", color=color, ms=6)
    for ax, key, title in zip(
        axes, STEP0_PANELS, ("activation std (forward)", "gradient std (backward)"), strict=True
    ):
        ax.set_yscale("log")
        floor, ceiling = edges[key]
        for edge in (floor, ceiling):
            ax.axhline(edge, color="#999", lw=0.6, ls=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (depth)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"{arch}, {act}: step 0 (0 drawn on the floor ▼, non-finite on the ceiling ▲)")
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


def _edges(values: Sequence[float]) -> np.ndarray:
    """Cell edges for centres ``values`` (sorted): midpoints, the ends mirrored."""
    v = np.asarray(values, dtype=float)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[:-1] + v[1:]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def figure_edge_of_chaos(table: dict[str, Any]):
    """Left: trainability, mean best val accuracy by depth × sigma_w2, with 6 xi_c from mean-field
    theory drawn over it (Schoenholz et al. 2017, Fig. 5); right: the chi1 = 1 line in the
    (sigma_w2, sigma_b2) plane, ordered left of it and chaotic right, with the swept points
    (:func:`~initbench.report.tables.edge_of_chaos_tables`)."""
    grid, theory, phase = table["grid"], table["theory"], table["phase"]
    if grid.empty:
        return None
    fig = _figure(12, 4.6)
    heat_ax, phase_ax = fig.subplots(1, 2, width_ratios=[1.35, 1])
    sw, depths = list(grid.columns), list(grid.index)
    mesh = heat_ax.pcolormesh(
        _edges(sw), _edges(depths), grid.to_numpy(dtype=float), cmap="viridis", shading="flat"
    )
    fig.colorbar(mesh, ax=heat_ax, label="best val accuracy (mean over seeds)")
    finite = theory[np.isfinite(theory["depth_limit"])]
    heat_ax.plot(finite["sigma_w2"], finite["depth_limit"], color="white", linewidth=2,
                 label="6 ξ_c (mean-field theory)")  # fmt: skip
    if np.isfinite(table["critical"]):
        heat_ax.axvline(table["critical"], color="white", linestyle="--", linewidth=1,
                        label=f"χ₁ = 1 (σ_w² = {table['critical']:.3g})")  # fmt: skip
    heat_ax.set_ylim(_edges(depths)[0], _edges(depths)[-1])
    heat_ax.set_xlim(_edges(sw)[0], _edges(sw)[-1])
    heat_ax.set_xlabel("σ_w²")
    heat_ax.set_ylabel("depth (hidden layers)")
    heat_ax.set_title("trainability")
    heat_ax.legend(loc="upper right", fontsize=7, framealpha=0.6)

    line = phase[np.isfinite(phase["sigma_w2_critical"])]
    phase_ax.plot(line["sigma_w2_critical"], line["sigma_b2"], color="black", label="χ₁ = 1")
    phase_ax.scatter(sw, [table["sigma_b2"]] * len(sw), color="tab:red", s=18, zorder=3,
                     label="swept runs")  # fmt: skip
    top = float(phase["sigma_b2"].max())
    right = max(float(np.nanmax(line["sigma_w2_critical"])) if len(line) else 0.0, max(sw)) * 1.05
    phase_ax.set_xlim(0, right)
    phase_ax.set_ylim(0, top)
    phase_ax.text(0.04 * right, 0.9 * top, "ordered (χ₁ < 1)", fontsize=8)
    phase_ax.text(0.7 * right, 0.1 * top, "chaotic (χ₁ > 1)", fontsize=8)
    phase_ax.set_xlabel("σ_w²")
    phase_ax.set_ylabel("σ_b²")
    phase_ax.set_title("phase diagram")
    phase_ax.legend(loc="lower right", fontsize=7, bbox_to_anchor=(1, 0.15))
    phase_ax.grid(alpha=0.3)
    fig.suptitle(
        f"{table['dataset']}, {table['activation']}, mean_field init, σ_b² = {table['sigma_b2']:g}"
    )
    return fig
