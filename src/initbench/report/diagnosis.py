"""Why a scheme fails, in one sentence, from what its runs recorded.

For each scheme of a leaderboard that stalls, diverges or trails the best (not tied with it;
with one seed, more than :data:`TRAILS_BY` below it), :func:`why_it_fails` reads the first
seed's step-0 report (diagnose.json: per layer ``weight_std``, ``act_std``, ``act_rms``,
``grad_std``, ``dead_frac``, ``saturated_frac``, ``act_cos``, ``nonfinite``) and the runs'
outcome, and names the first of these that holds:

- symmetric weights: every layer's weights constant (``weight_std`` 0) — identical units, so
  activation std 0 within a layer and one gradient for all units: symmetry never breaks;
- a non-finite value at step 0, and the layer where it appears;
- activations that vanish or explode with depth: the first layer whose RMS leaves
  :data:`RMS_BAND`, by how much, and the last layer's RMS;
- dead units (ReLU family): the first layer where at least :data:`DEAD` of the units never fire;
- saturation (tanh, sigmoid): the first layer where at least :data:`SATURATED` of the units sit
  in the flat tails;
- gradients that vanish before the first layer: its gradient std :data:`GRAD_VANISH` or less of
  the last layer's;
- inputs mapped alike: cosine between examples at the last hidden layer :data:`COLLAPSE_COS` or
  more;

and the outcome (the step a run diverged at, stalled at chance, or how far it trails), with the
mean-field prediction beside it where it applies (a Gaussian-like init in a fully connected or
plain convolutional net: σ_w² = weight_std² · fan_in measured at the middle layer, σ_b² = 0 —
the regime of q and the phase from χ₁; :mod:`initbench.theory`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from initbench.report.runset import RunSet
from initbench.report.tables import STALL_MARGIN, cell_runs, first_seed

RMS_BAND = (1e-2, 1e2)  # activations outside this RMS have vanished or exploded
DEAD = 0.5  # fraction of units that never fire at a layer
SATURATED = 0.5  # fraction of units in the tails of a saturating activation
GRAD_VANISH = 1e-3  # first layer's gradient std over the last layer's
COLLAPSE_COS = 0.99  # cosine between examples at the last hidden layer
TRAILS_BY = STALL_MARGIN  # one seed: a scheme this far below the best trails it


def fails(board: pd.DataFrame) -> pd.DataFrame:
    """The board's rows that stall, diverge or trail the best."""
    best = board.iloc[0]["best_val_acc_mean"]

    def failing(row: pd.Series) -> bool:
        if row["rank"] == 1 and not (row["stalled"] or row["diverged"]):
            return False
        if row["stalled"] or row["diverged"]:
            return True
        tied = row["tied_with_best"]
        if tied is None or pd.isna(tied):
            return bool(row["best_val_acc_mean"] < best - TRAILS_BY)
        return not bool(tied)

    return board[board.apply(failing, axis=1)]


def _num(layers: pd.DataFrame, key: str) -> np.ndarray:
    if key not in layers:
        return np.full(len(layers), np.nan)
    return pd.to_numeric(layers[key], errors="coerce").to_numpy(dtype=float)


def _at(layers: pd.DataFrame, i: int) -> str:
    """``layer 5 (fc5)``."""
    row = layers.iloc[i]
    name = row.get("name")
    return f"layer {int(row['depth'])}" + (f" ({name})" if isinstance(name, str) else "")


def step0_cause(layers: pd.DataFrame) -> str | None:
    """The first step-0 pathology in ``layers`` (one run, by depth), in words; None if none."""
    if layers.empty:
        return None
    layers = layers.sort_values("depth").reset_index(drop=True)
    wstd, astd, rms = _num(layers, "weight_std"), _num(layers, "act_std"), _num(layers, "act_rms")
    grad = _num(layers, "grad_std")
    hidden = slice(0, max(1, len(layers) - 1))  # the head's output is the logits
    if np.all(wstd[np.isfinite(wstd)] == 0) and np.isfinite(wstd).any():
        return (
            "symmetric weights: every layer's weights are one constant (weight std 0), so the "
            f"units of a layer are identical — activation std {_g(np.nanmax(astd[hidden]))} "
            f"within a layer, first-layer gradient std {_g(grad[0])} — and training cannot "
            "tell them apart"
        )
    nonfinite = _num(layers, "nonfinite")
    bad = np.flatnonzero((nonfinite > 0) | ~np.isfinite(rms) & ~np.isnan(rms))
    if bad.size:
        return f"the forward pass is not finite from {_at(layers, int(bad[0]))} on at step 0"
    lo, hi = RMS_BAND
    out = np.flatnonzero((rms[hidden] < lo) | (rms[hidden] > hi))
    if out.size:
        i = int(out[0])
        way = "vanish" if rms[i] < lo else "explode"
        edge = lo if rms[i] < lo else hi
        factor = rms[i] / edge if rms[i] > hi else edge / max(rms[i], 1e-300)
        return (
            f"activations {way} with depth: the RMS leaves [{lo:g}, {hi:g}] at "
            f"{_at(layers, i)} ({_g(rms[i])}, {_g(factor)}× past the bound) and is "
            f"{_g(rms[len(layers) - 1])} at the last layer"
        )
    dead = _num(layers, "dead_frac")[hidden]
    hit = np.flatnonzero(dead >= DEAD)
    if hit.size:
        i = int(hit[0])
        return f"dead units: {dead[i]:.0%} of the units at {_at(layers, i)} never fire at step 0"
    sat = _num(layers, "saturated_frac")[hidden]
    hit = np.flatnonzero(sat >= SATURATED)
    if hit.size:
        i = int(hit[0])
        return f"saturation: {sat[i]:.0%} of the units at {_at(layers, i)} sit in the flat tails"
    if np.isfinite(grad[0]) and np.isfinite(grad[-1]) and grad[-1] > 0:
        if grad[0] <= GRAD_VANISH * grad[-1]:
            return (
                f"gradients vanish before the first layer: std {_g(grad[0])} there against "
                f"{_g(grad[-1])} at the last ({_g(grad[0] / grad[-1])}×)"
            )
    cos = _num(layers, "act_cos")[hidden]
    if np.isfinite(cos).any() and cos[np.isfinite(cos)][-1] >= COLLAPSE_COS:
        return (
            f"inputs mapped alike: cosine {cos[np.isfinite(cos)][-1]:.3f} between examples at "
            "the last hidden layer"
        )
    return None


def outcome(row: Mapping[str, Any], runs: pd.DataFrame, best: float) -> str:
    """How the scheme's runs ended: diverged (first step), stalled, or how far it trails."""
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        steps = pd.to_numeric(diverged["diverged_at_step"], errors="coerce").dropna()
        at = f" at step {int(steps.min())}" if len(steps) else ""
        return f"diverged{at} ({len(diverged)} of {len(runs)} runs)"
    if row["stalled"]:
        return f"stalled at chance ({int(row['stalled'])} of {int(row['runs'])} runs)"
    return f"trails the best by {best - row['best_val_acc_mean']:.3f} accuracy"


def mean_field_text(layers: pd.DataFrame, activation: str) -> str | None:
    """The mean-field regime for the measured σ_w² of the middle hidden layer (σ_b² = 0); None
    where theory does not apply (no fan_in, zero weights, an activation it has no map for)."""
    from initbench.theory import mean_field

    hidden = layers.sort_values("depth").iloc[:-1]
    if hidden.empty or "fan_in" not in hidden or "weight_std" not in hidden:
        return None
    mid = hidden.iloc[len(hidden) // 2]
    try:
        sigma_w2 = float(mid["weight_std"]) ** 2 * float(mid["fan_in"])
        if not math.isfinite(sigma_w2) or sigma_w2 <= 0:
            return None
        mf = mean_field(activation, sigma_w2, 0.0)
    except (ValueError, TypeError, KeyError):
        return None
    regime = {"vanishing": "q vanishes", "exploding": "q explodes",
              "fixed_point": f"q → {mf.q_star:.3g}"}.get(mf.regime, mf.regime)  # fmt: skip
    where = f"σ_w² = {sigma_w2:.3g}, σ_b² = 0"
    return f"mean field at {where}: {regime}, χ₁ = {mf.chi1:.3g} ({mf.phase})"


def why_it_fails(runset: RunSet, boards: Mapping[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """One row per failing scheme of each leaderboard: architecture, activation, scheme,
    outcome, cause (a sentence; "no step-0 pathology measured" when none), theory."""
    rows = []
    for (arch, act), board in boards.items():
        best = float(board.iloc[0]["best_val_acc_mean"])
        cell = cell_runs(runset.runs, arch, act, trained=True)
        for _, row in fails(board).iterrows():
            runs = cell[cell["variant"] == row["scheme"]]
            first = first_seed(runs[runs["has_step0"]], row["scheme"])
            layers = pd.DataFrame()
            if first is not None:
                layers = runset.layers[runset.layers["run_id"] == first["run_id"]]
            if layers.empty:
                cause, theory = "no step-0 report recorded", ""
            else:
                cause = step0_cause(layers) or "no step-0 pathology measured"
                theory = mean_field_text(layers, act) or ""
            rows.append({
                "architecture": arch, "activation": act, "scheme": row["scheme"],
                "outcome": outcome(row, runs, best), "cause": cause, "theory": theory,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["architecture", "activation", "scheme", "outcome",
                                       "cause", "theory"])  # fmt: skip


WHY_HEADER = ["scheme", "outcome", "measured cause (step 0)", "mean-field prediction"]


def why_cells(table: pd.DataFrame) -> Iterator[tuple[str, str, list[list[str]]]]:
    """:func:`why_it_fails`' rows per leaderboard cell, in its order: (architecture,
    activation, the cell's rows under :data:`WHY_HEADER`)."""
    for (arch, act), cell in table.groupby(["architecture", "activation"], sort=False):
        yield arch, act, [[r.scheme, r.outcome, r.cause, r.theory or "–"]
                          for r in cell.itertuples()]  # fmt: skip


def _g(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.3g}"
