"""The report's ranking: each run's score, the target accuracy and the epochs to reach it,
and the leaderboards (schemes ranked by mean best val accuracy over seeds, with a bootstrap
interval and whether each is tied with the best).

Computed from the runs table (:class:`~initbench.report.runset.RunSet`) alone; the report's
text and figures (``tables``, ``render``) format what this returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from initbench.report.runset import TRAINED, RunSet

TARGET_FRACTION = 0.9  # default target accuracy: this fraction of the architecture's best


def set_target(runset: RunSet, target_acc: float | None) -> None:
    """Fill ``target_acc`` and ``epochs_to_target``: the first epoch whose val accuracy reaches
    ``target_acc`` (default: TARGET_FRACTION of the best accuracy in the architecture)."""
    runs, curves = runset.runs, runset.curves
    best_by_arch = runs.groupby("architecture")["best_val_acc"].max()
    for idx, row in runs.iterrows():
        target = target_acc
        if target is None:
            best = best_by_arch.get(row["architecture"])
            target = None if best is None or pd.isna(best) else round(TARGET_FRACTION * best, 4)
        runs.at[idx, "target_acc"] = np.nan if target is None else target
        reached = curves[(curves["run_id"] == row["run_id"]) & (curves["val/acc"] >= (target or 0))]
        first = reached["epoch"].min() if target is not None and len(reached) else np.nan
        runs.at[idx, "epochs_to_target"] = first
    runs["epochs_to_target"] = runs["epochs_to_target"].astype("Int64")


def score(row: pd.Series) -> float:
    """Best val accuracy; a run that never got evaluated counts as chance."""
    if pd.notna(row["best_val_acc"]):
        return float(row["best_val_acc"])
    return float(row["chance_acc"]) if pd.notna(row["chance_acc"]) else 0.0


BOOTSTRAP_SEED = 0  # fixed: the same runs give the same intervals, report after report
BOOTSTRAP_RESAMPLES = 10_000
CI_LEVEL = 0.95
FEW_SEEDS = 3  # at most this many seeds: the interval is said to be unreliable


def bootstrap_ci(
    values: Sequence[float],
    *,
    level: float = CI_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993): resample the seeds
    with replacement, take the mean, read the (1 - level)/2 and (1 + level)/2 quantiles.

    Undefined (NaN, NaN) for fewer than 2 values. Each call starts its own generator from
    ``seed``, so a scheme's interval depends on its runs only, not on the other schemes.
    With few seeds it cannot be wider than their range, so it understates the uncertainty.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _tied(board: pd.DataFrame) -> list[Any]:
    """Tied with the best (rank 1): the scheme's interval overlaps the best's (its upper end >=
    the best's lower end). The best is True; None where either interval is undefined."""
    best = board.iloc[0]
    tied: list[Any] = []
    for i, (_, r) in enumerate(board.iterrows()):
        if i == 0:
            tied.append(True)
        elif pd.isna(r["ci_high"]) or pd.isna(best["ci_low"]):
            tied.append(None)
        else:
            tied.append(bool(r["ci_high"] >= best["ci_low"]))
    return tied


def leaderboards(runs: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (architecture, activation): schemes ranked by mean best val accuracy over seeds, with
    a 95% bootstrap interval over seeds (:func:`bootstrap_ci`) and whether each scheme is
    statistically tied with the best (:func:`_tied`: the intervals overlap)."""
    trained = runs[runs["status"].isin(TRAINED)].copy()
    if trained.empty:
        return {}
    trained["score"] = trained.apply(score, axis=1)
    boards = {}
    for (arch, act), cell in trained.groupby(["architecture", "activation"], sort=True):
        rows = []
        for variant, g in cell.groupby("variant"):
            ci_low, ci_high = bootstrap_ci(g["score"].to_numpy())
            rows.append(
                {
                    "scheme": variant,
                    "runs": len(g),
                    "best_val_acc_mean": g["score"].mean(),
                    "best_val_acc_std": g["score"].std(ddof=1) if len(g) > 1 else 0.0,
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "final_val_acc_mean": g["final_val_acc"].mean(),
                    "epochs_to_target": g["epochs_to_target"].astype(float).mean(),
                    "reached_target": int(g["epochs_to_target"].notna().sum()),
                    "diverged": int((g["status"] == "diverged").sum()),
                    "stalled": int(g["stalled"].sum()),
                }
            )
        board = pd.DataFrame(rows).sort_values(
            ["best_val_acc_mean", "best_val_acc_std", "scheme"], ascending=[False, True, True]
        )
        board.insert(0, "rank", range(1, len(board) + 1))
        board = board.reset_index(drop=True)
        board.insert(board.columns.get_loc("ci_high") + 1, "tied_with_best", _tied(board))
        boards[arch, act] = board
    return boards


LEADERBOARD_COLUMNS = [  # leaderboard.csv, in this order
    "architecture", "activation", "rank", "scheme", "runs", "best_val_acc_mean",
    "best_val_acc_std", "ci_low", "ci_high", "tied_with_best", "final_val_acc_mean",
    "epochs_to_target", "reached_target", "diverged", "stalled",
]  # fmt: skip


def leaderboard_table(boards: Mapping[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """Every leaderboard in one table (leaderboard.csv): :data:`LEADERBOARD_COLUMNS`."""
    frames = [
        board.assign(architecture=arch, activation=act) for (arch, act), board in boards.items()
    ]
    if not frames:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    return pd.concat(frames, ignore_index=True)[LEADERBOARD_COLUMNS]


def pick_schemes(board: pd.DataFrame, n: int) -> list[str]:
    """``n`` schemes spread over the leaderboard: best, worst and evenly in between."""
    schemes = list(board["scheme"])
    if len(schemes) <= n:
        return schemes
    idx = sorted({round(i * (len(schemes) - 1) / (n - 1)) for i in range(n)})
    return [schemes[i] for i in idx]
