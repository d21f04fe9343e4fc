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

from initbench.report.runset import TRAINED, RunSet, variant_labels

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


# ---- tuned leaderboards: each scheme at the learning rate its holdout accuracy picks ----------

TUNED_COLUMNS = [  # tuned.csv, in this order
    "architecture", "rank", "activation", "scheme", "lr", "lrs", "runs", "holdout_acc_mean",
    "test_acc_mean", "test_acc_std", "ci_low", "ci_high", "tied_with_best", "diverged", "stalled",
    "init_seconds", "init_forward_passes", "init_backward_passes", "init_device",
    "act_std_last", "grad_std_first", "act_cos_last_hidden",
]  # fmt: skip


def _holdout_score(row: pd.Series, column: str) -> float:
    """A finished run's final accuracy; a diverged one (or one never evaluated) counts as
    chance."""
    if row["status"] == "finished" and pd.notna(row[column]):
        return float(row[column])
    return float(row["chance_acc"]) if pd.notna(row["chance_acc"]) else 0.0


def _step0(layers: pd.DataFrame, run_id: str) -> tuple[float, float, float]:
    """At step 0: the last layer's activation std, the first layer's gradient std, and the mean
    cosine between examples at the last hidden layer (the layer before the last; NaN in reports
    without ``act_cos``)."""
    run = layers[layers["run_id"] == run_id].sort_values("depth") if not layers.empty else layers
    if run.empty:
        return math.nan, math.nan, math.nan
    act = pd.to_numeric(run["act_std"], errors="coerce")
    grad = pd.to_numeric(run["grad_std"], errors="coerce")
    cos = math.nan
    if "act_cos" in run and len(run) > 1:
        cos = float(pd.to_numeric(run["act_cos"], errors="coerce").iloc[-2])
    return float(act.iloc[-1]), float(grad.iloc[0]), cos


def tuned_leaderboards(
    runs: pd.DataFrame, layers: pd.DataFrame, stall_margin: float
) -> dict[str, pd.DataFrame]:
    """Per architecture, for the runs that held out a validation split (``trainer.holdout``):
    each (activation, scheme) at the learning rate whose mean final holdout accuracy over seeds
    is highest, ranked by the mean final *test* accuracy at that rate, with its bootstrap
    interval over seeds, what the init cost (mean seconds and passes) and the step-0 signal of
    its first seed. A diverged run counts as chance on both splits; *stalled*: within
    ``stall_margin`` of chance on the test split."""
    runs = runs.assign(tuned=variant_labels(runs, skip=("lr",)))  # the variant but its lr
    trained = runs[runs["status"].isin(TRAINED) & runs["final_holdout_acc"].notna()
                   | (runs["status"] == "diverged")].copy()  # fmt: skip
    trained = trained[trained["architecture"].isin(
        runs.loc[runs["final_holdout_acc"].notna(), "architecture"])]  # fmt: skip
    if trained.empty:
        return {}
    trained["holdout"] = trained.apply(_holdout_score, axis=1, column="final_holdout_acc")
    trained["test"] = trained.apply(_holdout_score, axis=1, column="final_val_acc")
    boards = {}
    for arch, cell in trained.groupby("architecture", sort=True):
        rows = []
        for (act, variant), g in cell.groupby(["activation", "tuned"], sort=True):
            by_lr = g.groupby("lr", dropna=False)["holdout"].mean()
            lr = by_lr.sort_values(ascending=False, kind="stable").index[0]
            at = g[g["lr"] == lr] if pd.notna(lr) else g[g["lr"].isna()]
            ci_low, ci_high = bootstrap_ci(at["test"].to_numpy())
            first = at.sort_values(["seed", "run_id"]).iloc[0]
            act_std, grad_std, cos = _step0(layers, first["run_id"])
            rows.append(
                {
                    "activation": act,
                    "scheme": variant,
                    "lr": lr,
                    "lrs": " ".join(f"{x:g}" for x in sorted(g["lr"].dropna().unique())),
                    "runs": len(at),
                    "holdout_acc_mean": at["holdout"].mean(),
                    "test_acc_mean": at["test"].mean(),
                    "test_acc_std": at["test"].std(ddof=1) if len(at) > 1 else 0.0,
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "diverged": int((at["status"] == "diverged").sum()),
                    "stalled": int((at["test"] <= at["chance_acc"] + stall_margin).sum()),
                    "init_seconds": at["init_seconds"].mean(),
                    "init_forward_passes": at["init_forward_passes"].mean(),
                    "init_backward_passes": at["init_backward_passes"].mean(),
                    "init_device": first["init_device"],
                    "act_std_last": act_std,
                    "grad_std_first": grad_std,
                    "act_cos_last_hidden": cos,
                }
            )
        board = pd.DataFrame(rows).sort_values(
            ["test_acc_mean", "test_acc_std", "activation", "scheme"],
            ascending=[False, True, True, True],
        )
        board.insert(0, "rank", range(1, len(board) + 1))
        board = board.reset_index(drop=True)
        board.insert(board.columns.get_loc("ci_high") + 1, "tied_with_best", _tied(board))
        boards[arch] = board
    return boards


def tuned_table(boards: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Every tuned leaderboard in one table (tuned.csv): :data:`TUNED_COLUMNS`."""
    frames = [board.assign(architecture=arch) for arch, board in boards.items()]
    if not frames:
        return pd.DataFrame(columns=TUNED_COLUMNS)
    return pd.concat(frames, ignore_index=True)[TUNED_COLUMNS]
