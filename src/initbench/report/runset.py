"""What every part of the report shares: the :class:`RunSet` tables, one run as read from its
source (:class:`RawRun`), one run's weight samples (:class:`WeightPanel`), the report's error,
and the column names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

CURVE_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")
TRAINED = ("finished", "diverged")  # statuses that count as results in the leaderboards
COLUMNS = [  # results.csv, in this order
    "run_id", "sweep", "architecture", "experiment", "model", "dataset", "activation", "init",
    "scheme", "variant", "init_hparams", "optimizer", "lr", "batch_size", "epochs", "seed",
    "status", "stalled", "epochs_completed", "final_train_loss", "final_train_acc",
    "final_val_loss", "final_val_acc", "best_val_acc", "chance_acc", "target_acc",
    "epochs_to_target", "diverged_at_step", "wall_s", "n_params", "has_curves", "has_step0",
    "final_holdout_acc", "init_seconds", "init_forward_passes", "init_backward_passes",
    "init_device", "run_dir",
]  # fmt: skip


SETUP_KEYS = ("optimizer", "lr", "batch_size", "epochs")  # shown in a label where they vary


def fmt_value(value: Any) -> str:
    """A setting in a label: ``0.001``, ``adam``."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def variant_labels(runs: pd.DataFrame, skip: tuple[str, ...] = ()) -> list[str]:
    """Each run's scheme label, plus the training setup (:data:`SETUP_KEYS` but ``skip``)
    where it differs within an architecture: ``kaiming_normal [lr=0.001]``. With
    ``skip=("lr",)``: the runs a learning rate is picked among share a label."""
    keys = [k for k in SETUP_KEYS if k not in skip]
    varying: dict[str, list[str]] = {}
    for arch, group in runs.groupby("architecture", dropna=False):
        trained = group[group["status"] != "diagnosed"]
        varying[arch] = [k for k in keys if trained[k].astype(str).nunique() > 1]
    out = []
    for _, row in runs.iterrows():
        setup = " ".join(f"{k}={fmt_value(row[k])}" for k in varying.get(row["architecture"], []))
        out.append(f"{row['scheme']} [{setup}]" if setup else row["scheme"])
    return out


class ReportError(Exception):
    """The source holds nothing to report on, or cannot be read; the message says which."""


@dataclass
class RunSet:
    """Everything a report is built from, whatever the source."""

    source: str
    runs: pd.DataFrame  # one row per run: COLUMNS (results.csv)
    curves: pd.DataFrame  # run_id, epoch, step, train/loss, train/acc, val/loss, val/acc
    layers: pd.DataFrame  # run_id, depth, name, kind, act_std, grad_std, ... (step 0)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> config
    notes: list[str] = field(default_factory=list)  # what was left out, and why


@dataclass
class RawRun:
    """One run as read from its source, before labelling."""

    run_id: str
    sweep: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    curves: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    run_dir: str = ""
    mtime: float = 0.0


@dataclass
class WeightPanel:
    """One layer's weight samples at initialization and at the end of one run (weights.npz)."""

    variant: str
    run_id: str
    layer: str  # without ".weight"
    numel: int  # the layer's full size; ``start.size < numel`` when sampled
    start: np.ndarray
    end: np.ndarray
