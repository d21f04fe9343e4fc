"""Reports from runs: ``results.csv``, ``summary.md``, PNG figures and ``index.html``.

Two sources give the same report, because both are first read into one :class:`RunSet` (a
table of runs, a table of per-epoch curves, a table of step-0 layer statistics) and
everything is built from that alone:

- a local folder holding run directories (``summary.json``, ``config.yaml``,
  ``metrics.jsonl``, ``diagnose.json``, ``checkpoint.pt``), e.g. a local sweep's folder,
  ``outputs/`` or a Hydra ``multirun/`` folder, searched recursively;
- a W&B sweep, ``entity/project/sweep_id``, through the public API (run config, summary and
  history; ``diagnose.json`` where the run uploaded it).

Labels: a run's **architecture** is its model and data (``mlp2x256/fashion_mnist``,
``cnn30/cifar10``); its **scheme** is the canonical initializer plus the hparams that differ
from the scheme's defaults or between runs (``normal(std=10)``); when the training setup
(optimizer, lr, batch size, epochs) differs between runs of one architecture, it is added to
the scheme's label too, so the leaderboards never pool different setups.

Usage::

    runs = load_source("outputs/local-sweeps/circles")
    files = build_report(runs, "outputs/local-sweeps/circles/report")
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from initbench import inits
from initbench.io import read_json
from initbench.telemetry.sinks import markdown_table

log = logging.getLogger(__name__)

CURVE_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")
NUM_CLASSES = {"circles": 2, "fashion_mnist": 10, "cifar10": 10}  # gaussian: from its config
STALL_MARGIN = 0.02  # a finished run whose best val accuracy is within this of chance stalled
TARGET_FRACTION = 0.9  # default target accuracy: this fraction of the architecture's best
SETUP_KEYS = ("optimizer", "lr", "batch_size", "epochs")
TRAINED = ("finished", "diverged")  # statuses that count as results in the leaderboards
SKIP_DIRS = {"wandb", "tensorboard", ".submitit", ".hydra", "report"}
COLUMNS = [  # results.csv, in this order
    "run_id", "sweep", "architecture", "experiment", "model", "dataset", "activation", "init",
    "scheme", "variant", "init_hparams", "optimizer", "lr", "batch_size", "epochs", "seed",
    "status", "stalled", "epochs_completed", "final_train_loss", "final_train_acc",
    "final_val_loss", "final_val_acc", "best_val_acc", "chance_acc", "target_acc",
    "epochs_to_target", "diverged_at_step", "wall_s", "n_params", "has_curves", "has_step0",
    "run_dir",
]  # fmt: skip


INT_COLUMNS = ("seed", "batch_size", "epochs", "epochs_completed", "diverged_at_step", "n_params")


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


# ----------------------------------------------------------------------------- labels


def architecture_label(cfg: Mapping[str, Any]) -> str:
    """Model shape and dataset: ``mlp2x256/fashion_mnist``, ``mlp10-5/circles``,
    ``cnn30/cifar10`` (``-bn`` with batch norm)."""
    model = cfg.get("model") or {}
    dataset = (cfg.get("dataset") or {}).get("name", "?")
    if model.get("arch") == "mlp":
        widths = model.get("widths") or [model.get("width")] * int(model.get("depth") or 0)
        if len(set(widths)) == 1:
            shape = f"mlp{len(widths)}x{widths[0]}"
        else:
            shape = "mlp" + "-".join(str(w) for w in widths)
    elif model.get("arch") == "cnn":
        shape = f"cnn{model.get('depth')}" + ("-bn" if model.get("norm") == "batch" else "")
    else:
        shape = str(model.get("name", "?"))
    return f"{shape}/{dataset}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _init_hparams(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (cfg.get("init") or {}).items() if k != "name"}


def _canonical(name: str | None) -> str:
    try:
        return inits.resolve(name) if name else "?"
    except (ValueError, KeyError):
        return str(name)


def _scheme_defaults(scheme: str) -> dict[str, Any]:
    try:
        return dict(inits.get_init(scheme).hparams)
    except (ValueError, KeyError):
        return {}


def scheme_labels(schemes: Sequence[str], hparams: Sequence[Mapping[str, Any]]) -> list[str]:
    """``normal(std=10)``: each run's scheme plus the hparams that differ from the scheme's
    defaults or between the runs of that scheme."""
    varying: dict[str, set[str]] = {}
    for scheme, hp in zip(schemes, hparams, strict=True):
        for key, value in hp.items():
            varying.setdefault(f"{scheme}.{key}", set()).add(_fmt(value))
    labels = []
    for scheme, hp in zip(schemes, hparams, strict=True):
        defaults = _scheme_defaults(scheme)
        shown = [
            f"{k}={_fmt(v)}"
            for k, v in hp.items()
            if (k in defaults and _fmt(defaults[k]) != _fmt(v)) or len(varying[f"{scheme}.{k}"]) > 1
        ]
        labels.append(f"{scheme}({', '.join(shown)})" if shown else scheme)
    return labels


def natural_key(label: str) -> tuple:
    """Sort key that orders the numbers inside labels by value: std=1e-05 before std=0.001."""
    parts = re.split(r"(-?\d+(?:\.\d*)?(?:e[-+]?\d+)?)", str(label))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


# ----------------------------------------------------------------------------- sources


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return rows


def _run_dirs(folder: Path) -> list[Path]:
    """Folders under ``folder`` (itself included) that hold summary.json or diagnose.json."""
    found = set()
    for name in ("summary.json", "diagnose.json"):
        for path in folder.rglob(name):
            rel = path.relative_to(folder).parts[:-1]
            if not any(part in SKIP_DIRS for part in rel):
                found.add(path.parent)
    return sorted(found)


def _sweep_of(run_dir: Path, folder: Path) -> str:
    """The sweep a run belongs to: a local sweep's name, or a W&B agent's sweep id."""
    for parent in [run_dir, *run_dir.parents]:
        index = read_json(parent / "combinations.json")
        if isinstance(index, dict) and index.get("sweep"):
            return str(index["sweep"])
        if parent.parent.name == "wandb-sweeps":
            return parent.name
        if parent == folder:
            break
    return ""


@dataclass
class _Raw:
    """One run as read from its source, before labelling."""

    run_id: str
    sweep: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    curves: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    run_dir: str = ""
    mtime: float = 0.0


def load_local(folder: str | Path) -> RunSet:
    """Read every run under ``folder``.

    Raises:
        ReportError: the folder does not exist or holds no run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder (nor entity/project/sweep_id)")
    dirs = _run_dirs(folder)
    if not dirs:
        raise ReportError(
            f"no runs under {folder}: a run is a folder with summary.json (src/train.py) or "
            f"diagnose.json (src/diagnose.py)"
        )
    raws = []
    for run_dir in dirs:
        summary = read_json(run_dir / "summary.json")
        diagnose = read_json(run_dir / "diagnose.json")
        config = _read_yaml(run_dir / "config.yaml")
        if not isinstance(config, dict) and isinstance(diagnose, dict):
            config = diagnose.get("config")
        stamp = run_dir / ("summary.json" if summary is not None else "diagnose.json")
        raws.append(
            _Raw(
                run_id=str(run_dir.relative_to(folder)) if run_dir != folder else run_dir.name,
                sweep=_sweep_of(run_dir, folder),
                config=config if isinstance(config, dict) else {},
                summary=summary if isinstance(summary, dict) else None,
                curves=_read_jsonl(run_dir / "metrics.jsonl"),
                layers=list((diagnose or {}).get("layers") or []),
                run_dir=str(run_dir),
                mtime=stamp.stat().st_mtime if stamp.exists() else 0.0,
            )
        )
    return _assemble(str(folder), raws)


WANDB_STATES = {
    "finished": "finished",
    "crashed": "failed",
    "failed": "failed",
    "killed": "interrupted",
    "running": "running",
    "preempted": "interrupted",
}


def load_wandb(path: str, api: Any = None) -> RunSet:
    """Read a W&B sweep (``entity/project/sweep_id``) through the public API.

    Args:
        api: a ``wandb.Api()`` (made here when None); tests pass a stand-in.

    Raises:
        ReportError: the sweep cannot be read or has no runs.
    """
    if api is None:
        import wandb

        try:
            api = wandb.Api()
        except Exception as err:  # no key, no server
            raise ReportError(f"cannot reach W&B for {path}: {err}") from None
    try:
        sweep = api.sweep(path)
        runs = list(sweep.runs)
    except Exception as err:
        raise ReportError(f"cannot read the W&B sweep {path}: {err}") from None
    if not runs:
        raise ReportError(f"the W&B sweep {path} has no runs")
    sweep_id = path.rstrip("/").split("/")[-1]
    raws = []
    for run in runs:
        summary = dict(getattr(run.summary, "_json_dict", None) or run.summary or {})
        status = summary.get("status") or WANDB_STATES.get(getattr(run, "state", ""), "running")
        final = {
            k.replace("/", "_"): summary[k] for k in CURVE_KEYS if isinstance(summary.get(k), float)
        }
        curves = []
        try:
            for i, row in enumerate(run.scan_history(keys=list(CURVE_KEYS))):
                curves.append({**row, "epoch": row.get("epoch", i + 1), "step": row.get("_step")})
        except Exception as err:  # a run with no history
            log.warning("no history for W&B run %s: %s", run.id, err)
        layers = []
        try:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                run.file("diagnose.json").download(root=tmp, replace=True)
                layers = (read_json(Path(tmp) / "diagnose.json") or {}).get("layers") or []
        except Exception:  # not uploaded
            layers = []
        raws.append(
            _Raw(
                run_id=run.id,
                sweep=sweep_id,
                config=dict(run.config),
                summary={
                    **summary,
                    "status": status,
                    "final": summary.get("final") or final,
                    "wall_s": summary.get("wall_s", summary.get("_runtime")),
                },
                curves=curves,
                layers=list(layers),
            )
        )
    return _assemble(path, raws)


def load_source(source: str | Path) -> RunSet:
    """A local folder if ``source`` is one; else ``entity/project/sweep_id`` on W&B."""
    text = str(source)
    if Path(text).exists():
        return load_local(text)
    if re.fullmatch(r"[\w.-]+/[\w.-]+/[\w]+", text):
        return load_wandb(text)
    raise ReportError(f"{text} is neither a folder nor a W&B sweep path (entity/project/sweep_id)")


# ----------------------------------------------------------------------------- the tables


def _num_classes(cfg: Mapping[str, Any]) -> int | None:
    dataset = cfg.get("dataset") or {}
    return dataset.get("num_classes") or NUM_CLASSES.get(dataset.get("name"))


def _assemble(source: str, raws: Sequence[_Raw]) -> RunSet:
    """Label the runs, find what is missing, and build the three tables."""
    notes: list[str] = []
    rows, curve_rows, layer_rows, configs = [], [], [], {}
    schemes = []
    for raw in raws:
        cfg, summary = raw.config, raw.summary or {}
        choices = summary.get("choices") or {}
        init_name = (cfg.get("init") or {}).get("name") or choices.get("init")
        schemes.append(summary.get("init_scheme") or _canonical(init_name))
    labels = scheme_labels(schemes, [_init_hparams(r.config) for r in raws])
    for raw, label in zip(raws, labels, strict=True):
        cfg, summary = raw.config, raw.summary
        choices = (summary or {}).get("choices") or {}
        trainer = cfg.get("trainer") or {}
        final = (summary or {}).get("final") or {}
        n_classes = _num_classes(cfg)
        status = summary.get("status", "unknown") if summary else "diagnosed"
        best = (summary or {}).get("best_val_acc")
        chance = 1.0 / n_classes if n_classes else None
        stalled = bool(
            status == "finished"
            and best is not None
            and chance is not None
            and best <= chance + STALL_MARGIN
        )
        curves = [r for r in raw.curves if r.get("val/acc") is not None]
        rows.append(
            {
                "run_id": raw.run_id,
                "sweep": raw.sweep,
                "architecture": architecture_label(cfg) if cfg else "?",
                "experiment": cfg.get("experiment_name") or choices.get("experiment"),
                "model": (cfg.get("model") or {}).get("name") or choices.get("model"),
                "dataset": (cfg.get("dataset") or {}).get("name") or choices.get("dataset"),
                "activation": (cfg.get("activation") or {}).get("name")
                or choices.get("activation"),
                "init": (cfg.get("init") or {}).get("name") or choices.get("init"),
                "scheme": label,
                "init_hparams": json.dumps(_init_hparams(cfg), sort_keys=True),
                "optimizer": choices.get("optimizer")
                or str((cfg.get("optimizer") or {}).get("_target_", "")).split(".")[-1].lower(),
                "lr": (cfg.get("optimizer") or {}).get("lr"),
                "batch_size": trainer.get("batch_size"),
                "epochs": trainer.get("epochs"),
                "seed": cfg.get("seed", choices.get("seed")),
                "status": status,
                "stalled": stalled,
                "epochs_completed": (summary or {}).get("epochs_completed"),
                "final_train_loss": final.get("train_loss"),
                "final_train_acc": final.get("train_acc"),
                "final_val_loss": final.get("val_loss"),
                "final_val_acc": final.get("val_acc"),
                "best_val_acc": best,
                "chance_acc": chance,
                "diverged_at_step": (summary or {}).get("diverged_at_step"),
                "wall_s": (summary or {}).get("wall_s"),
                "n_params": (summary or {}).get("n_params"),
                "has_curves": bool(curves),
                "has_step0": bool(raw.layers),
                "run_dir": raw.run_dir,
                "_mtime": raw.mtime,
            }
        )
        configs[raw.run_id] = cfg
        for i, r in enumerate(raw.curves):
            curve_rows.append(
                {
                    "run_id": raw.run_id,
                    "epoch": r.get("epoch", i + 1),
                    "step": r.get("step"),
                    **{k: r.get(k) for k in CURVE_KEYS},
                }
            )
        for depth, layer in enumerate(raw.layers, start=1):
            layer_rows.append(
                {
                    "run_id": raw.run_id,
                    "depth": depth,
                    **{k: v for k, v in layer.items() if not isinstance(v, (dict, list))},
                }
            )
    runs = pd.DataFrame(rows)
    runs["variant"] = _variants(runs)
    runs = _drop_duplicates(runs, notes)
    runs["target_acc"] = np.nan
    runs["epochs_to_target"] = np.nan
    runs = runs[COLUMNS]
    for col in INT_COLUMNS:
        runs[col] = pd.to_numeric(runs[col], errors="coerce").round().astype("Int64")
    curves = pd.DataFrame(curve_rows, columns=["run_id", "epoch", "step", *CURVE_KEYS])
    layers = pd.DataFrame(layer_rows)
    if layers.empty:
        layers = pd.DataFrame(columns=["run_id", "depth", "name", "act_std", "grad_std"])
    curves = curves[curves["run_id"].isin(runs["run_id"])]
    layers = layers[layers["run_id"].isin(runs["run_id"])]
    runset = RunSet(
        source, runs, curves.reset_index(drop=True), layers.reset_index(drop=True), configs, notes
    )
    set_target(runset, None)
    _note_gaps(runset)
    return runset


def _variants(runs: pd.DataFrame) -> list[str]:
    """The scheme label, plus the training setup where it differs within an architecture."""
    out = []
    varying: dict[str, list[str]] = {}
    for arch, group in runs.groupby("architecture", dropna=False):
        trained = group[group["status"] != "diagnosed"]
        varying[arch] = [k for k in SETUP_KEYS if trained[k].astype(str).nunique() > 1]
    for _, row in runs.iterrows():
        keys = varying.get(row["architecture"], [])
        setup = " ".join(f"{k}={_fmt(row[k])}" for k in keys)
        out.append(f"{row['scheme']} [{setup}]" if setup else row["scheme"])
    return out


def _drop_duplicates(runs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Keep the newest of runs that repeat one combination (e.g. from two sweeps)."""
    runs = runs.sort_values("_mtime")
    key = ["architecture", "activation", "variant", "seed"]
    done = runs[runs["status"].isin(TRAINED + ("diagnosed",))]
    dropped = done[done.duplicated(subset=key, keep="last")]
    if len(dropped):
        notes.append(
            f"{len(dropped)} run(s) repeat a combination already present (same architecture, "
            f"activation, scheme and seed); kept the newest, left out: "
            + ", ".join(dropped["run_id"].astype(str))
        )
    runs = runs.drop(index=dropped.index).drop(columns="_mtime")
    return runs.sort_values("run_id").reset_index(drop=True)


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


def _note_gaps(runset: RunSet) -> None:
    runs, notes = runset.runs, runset.notes
    sweeps = sorted({s for s in runs["sweep"] if s})
    if len(sweeps) > 1:
        notes.append(
            f"runs come from {len(sweeps)} sweeps ({', '.join(sweeps)}); the tables pool them"
        )
    unfinished = runs[~runs["status"].isin(TRAINED + ("diagnosed",))]
    if len(unfinished):
        notes.append(
            f"{len(unfinished)} run(s) not finished ("
            + ", ".join(f"{s}: {n}" for s, n in unfinished["status"].value_counts().items())
            + ") are left out of the leaderboards: "
            + ", ".join(unfinished["run_id"].astype(str))
        )
    trained = runs[runs["status"].isin(TRAINED)]
    no_curves = trained[~trained["has_curves"]]
    if len(no_curves):
        notes.append(
            f"{len(no_curves)} run(s) have no per-epoch val/acc (metrics.jsonl missing or empty, "
            f"e.g. diverged before the first evaluation): no curves for "
            + ", ".join(no_curves["run_id"].astype(str))
        )
    no_best = trained[trained["best_val_acc"].isna()]
    if len(no_best):
        notes.append(
            f"{len(no_best)} run(s) never reached an evaluation (diverged at once): counted at "
            f"chance accuracy in the leaderboard means"
        )
    if len(runs) and not runs["has_step0"].any():
        notes.append(
            "no step-0 reports (diagnose.json): the activation/gradient-by-depth "
            "figures are left out"
        )


# ----------------------------------------------------------------------------- leaderboards


def _score(row: pd.Series) -> float:
    """Best val accuracy; a run that never got evaluated counts as chance."""
    if pd.notna(row["best_val_acc"]):
        return float(row["best_val_acc"])
    return float(row["chance_acc"]) if pd.notna(row["chance_acc"]) else 0.0


def leaderboards(runs: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (architecture, activation): schemes ranked by mean best val accuracy over seeds."""
    trained = runs[runs["status"].isin(TRAINED)].copy()
    if trained.empty:
        return {}
    trained["score"] = trained.apply(_score, axis=1)
    boards = {}
    for (arch, act), cell in trained.groupby(["architecture", "activation"], sort=True):
        rows = []
        for variant, g in cell.groupby("variant"):
            rows.append(
                {
                    "scheme": variant,
                    "runs": len(g),
                    "best_val_acc_mean": g["score"].mean(),
                    "best_val_acc_std": g["score"].std(ddof=1) if len(g) > 1 else 0.0,
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
        boards[arch, act] = board.reset_index(drop=True)
    return boards


def _cell(value: Any, digits: int = 4) -> str:
    if value is None or pd.isna(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _board_rows(board: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = [
        "rank",
        "scheme",
        "runs",
        "best val acc (mean ± std)",
        "final val acc",
        "epochs to target",
        "diverged",
        "stalled",
    ]
    rows = [
        [
            str(r["rank"]),
            str(r["scheme"]),
            str(r["runs"]),
            f"{r['best_val_acc_mean']:.4f} ± {r['best_val_acc_std']:.4f}",
            _cell(r["final_val_acc_mean"]),
            _cell(r["epochs_to_target"], 1)
            + (f" ({r['reached_target']}/{r['runs']})" if r["reached_target"] < r["runs"] else ""),
            str(r["diverged"]),
            str(r["stalled"]),
        ]
        for _, r in board.iterrows()
    ]
    return header, rows


def _best_grid(boards: Mapping[tuple[str, str], pd.DataFrame]) -> tuple[list[str], list[list[str]]]:
    archs = sorted({a for a, _ in boards})
    acts = sorted({b for _, b in boards})
    rows = []
    for arch in archs:
        row = [arch]
        for act in acts:
            board = boards.get((arch, act))
            if board is None or board.empty:
                row.append("–")
            else:
                top = board.iloc[0]
                row.append(f"{top['scheme']} ({top['best_val_acc_mean']:.3f})")
        rows.append(row)
    return ["architecture", *acts], rows


def _step0_rows(runset: RunSet) -> tuple[list[str], list[list[str]]]:
    """Per architecture, activation and scheme: the signal at the last and first layers."""
    layers, runs = runset.layers, runset.runs
    header = [
        "architecture",
        "activation",
        "scheme",
        "layers",
        "act std (last)",
        "grad std (first)",
        "non-finite from layer",
    ]
    rows = []
    if layers.empty:
        return header, rows
    merged = layers.merge(runs[["run_id", "architecture", "activation", "variant", "seed"]])
    groups = merged.groupby(["architecture", "activation", "variant"])
    for (arch, act, variant), g in sorted(groups, key=lambda kv: natural_key(" ".join(kv[0]))):
        first_run = g.sort_values(["seed", "run_id"])["run_id"].iloc[0]
        run = g[g["run_id"] == first_run].sort_values("depth")
        act_std = pd.to_numeric(run.get("act_std"), errors="coerce")
        grad_std = pd.to_numeric(run.get("grad_std"), errors="coerce")
        bad = run[
            (run.get("nonfinite", pd.Series(0, index=run.index)).fillna(0) > 0)
            | ~np.isfinite(act_std.fillna(np.inf))
        ]
        rows.append(
            [
                arch,
                act,
                variant,
                str(len(run)),
                _g(act_std.iloc[-1]),
                _g(grad_std.iloc[0]),
                str(int(bad["depth"].min())) if len(bad) else "–",
            ]
        )
    return header, rows


def _g(value: float) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.3g}"


# ----------------------------------------------------------------------------- figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def figure_curves(runset: RunSet, arch: str, act: str, order: Sequence[str]):
    """Val accuracy, val loss and train loss per epoch: per scheme the mean over seeds, and
    the min-max band over seeds."""
    runs = runset.runs
    cell = runs[
        (runs["architecture"] == arch) & (runs["activation"] == act) & runs["status"].isin(TRAINED)
    ]
    curves = runset.curves.merge(cell[["run_id", "variant"]])
    if curves.empty:
        return None
    fig = _figure(15, 4.4)
    axes = fig.subplots(1, 3)
    for color, variant in zip(_colors(len(order)), order, strict=True):
        c = curves[curves["variant"] == variant]
        if c.empty:
            continue
        for ax, key in zip(axes, ("val/acc", "val/loss", "train/loss"), strict=True):
            values = pd.to_numeric(c[key], errors="coerce")
            stats = values.groupby(c["epoch"]).agg(["mean", "min", "max"]).dropna()
            if stats.empty:
                continue
            n = c["run_id"].nunique()
            ax.plot(stats.index, stats["mean"], color=color, label=f"{variant} (n={n})")
            if n > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
    for ax, key in zip(axes, ("val/acc", "val/loss", "train/loss"), strict=True):
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


def figure_heatmap(runset: RunSet, arch: str, boards: Mapping[tuple[str, str], pd.DataFrame]):
    """Scheme x activation: mean best val accuracy (rows: best on average first)."""
    cells = {act: b for (a, act), b in boards.items() if a == arch}
    if not cells:
        return None
    acts = sorted(cells)
    schemes = sorted({s for b in cells.values() for s in b["scheme"]}, key=natural_key)
    grid = np.full((len(schemes), len(acts)), np.nan)
    for j, act in enumerate(acts):
        for _, r in cells[act].iterrows():
            grid[schemes.index(r["scheme"]), j] = r["best_val_acc_mean"]
    order = np.argsort(-np.nanmean(np.where(np.isnan(grid), -1.0, grid), axis=1), kind="stable")
    grid, schemes = grid[order], [schemes[i] for i in order]  # best on average at the top
    label_width = 0.075 * max(len(s) for s in schemes)
    fig = _figure(max(5.0, 2.4 + label_width + 0.9 * len(acts)), 1.4 + 0.38 * len(schemes))
    ax = fig.subplots()
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(acts)), acts, rotation=30, ha="right")
    ax.set_yticks(range(len(schemes)), schemes)
    for i in range(len(schemes)):
        for j in range(len(acts)):
            if not np.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if grid[i, j] < 0.6 else "black",
                )
    fig.colorbar(im, ax=ax, label="best val acc (mean over seeds)")
    ax.set_title(arch)
    return fig


def figure_step0(runset: RunSet, arch: str, act: str, order: Sequence[str]):
    """Step-0 activation std and gradient std against depth, per scheme (first seed), log y."""
    runs = runset.runs
    cell = runs[(runs["architecture"] == arch) & (runs["activation"] == act) & runs["has_step0"]]
    if cell.empty:
        return None
    fig = _figure(12, 4.4)
    axes = fig.subplots(1, 2)
    variants = [v for v in order if v in set(cell["variant"])] + sorted(
        set(cell["variant"]) - set(order), key=natural_key
    )
    for color, variant in zip(_colors(len(variants)), variants, strict=True):
        run_id = cell[cell["variant"] == variant].sort_values(["seed", "run_id"])["run_id"].iloc[0]
        layers = runset.layers[runset.layers["run_id"] == run_id].sort_values("depth")
        for ax, key in zip(axes, ("act_std", "grad_std"), strict=True):
            raw = pd.to_numeric(layers.get(key), errors="coerce").to_numpy(dtype=float)
            # a log scale cannot show 0, inf or NaN: they are counted in the legend instead
            y = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)
            gone = [f"{n} zero" for n in [int((raw == 0).sum())] if n] + [
                f"{n} non-finite" for n in [int((~np.isfinite(raw)).sum())] if n
            ]
            label = f"{variant} ({', '.join(gone)})" if gone else variant
            ax.plot(layers["depth"], y, color=color, marker=".", ms=3, label=label)
    from matplotlib.ticker import MaxNLocator

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


def _weight_layer(state: Mapping[str, Any], layer: str | None) -> str | None:
    names = [
        k[: -len(".weight")]
        for k, v in state.items()
        if k.endswith(".weight") and getattr(v, "ndim", 0) >= 2
    ]
    if layer is not None:
        return layer if layer in names else None
    return names[len(names) // 2] if names else None


def start_and_end_weights(
    run_dir: str | Path, cfg: Mapping[str, Any], layer: str | None
) -> tuple[str, np.ndarray, np.ndarray]:
    """A layer's weights as initialized (rebuilt from the config: same seed, same weights) and
    at the end (``checkpoint.pt``).

    Raises:
        ReportError: no checkpoint, no such layer, or the run's data cannot be loaded.
    """
    import torch

    from initbench.build import prepare
    from initbench.errors import UserError

    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise ReportError("no checkpoint.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    except Exception as err:
        raise ReportError(f"checkpoint.pt unreadable ({type(err).__name__})") from None
    name = _weight_layer(state, layer)
    if name is None:
        raise ReportError(f"no layer {layer!r} with weights")
    rebuild = {**cfg, "trainer": {**cfg.get("trainer", {}), "device": "cpu"}}
    try:
        model = prepare(rebuild).model
    except UserError as err:
        raise ReportError(f"cannot rebuild the initial weights: {err}") from None
    start = dict(model.state_dict())[f"{name}.weight"].detach().double().flatten().numpy()
    end = state[f"{name}.weight"].detach().double().flatten().numpy()
    return name, start, end


def pick_schemes(board: pd.DataFrame, n: int) -> list[str]:
    """``n`` schemes spread over the leaderboard: best, worst and evenly in between."""
    schemes = list(board["scheme"])
    if len(schemes) <= n:
        return schemes
    idx = sorted({round(i * (len(schemes) - 1) / (n - 1)) for i in range(n)})
    return [schemes[i] for i in idx]


def figure_weights(
    runset: RunSet,
    arch: str,
    act: str,
    schemes: Sequence[str],
    layer: str | None,
    skipped: list[str],
):
    """Histograms of one layer's weights at initialization and at the end, per scheme."""
    runs = runset.runs
    cell = runs[
        (runs["architecture"] == arch)
        & (runs["activation"] == act)
        & runs["status"].isin(TRAINED)
        & (runs["run_dir"] != "")
    ]
    panels = []
    for variant in schemes:
        candidates = cell[cell["variant"] == variant].sort_values(["seed", "run_id"])
        if candidates.empty:
            continue
        row = candidates.iloc[0]
        try:
            name, start, end = start_and_end_weights(
                row["run_dir"], runset.configs[row["run_id"]], layer
            )
        except ReportError as err:
            skipped.append(f"{row['run_id']}: {err}")
            continue
        panels.append((variant, name, start, end))
    if not panels:
        return None
    fig = _figure(3.6 * len(panels), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (variant, name, start, end) in zip(axes, panels, strict=True):
        finite = np.concatenate([start[np.isfinite(start)], end[np.isfinite(end)]])
        lo, hi = (finite.min(), finite.max()) if finite.size else (-1.0, 1.0)
        if lo == hi:  # a constant init (zeros, ones): a visible bin around it
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, int(np.clip(2 * np.sqrt(start.size), 10, 60)) + 1)
        ax.hist(start[np.isfinite(start)], bins=bins, alpha=0.6, label="start")
        ax.hist(end[np.isfinite(end)], bins=bins, alpha=0.6, label="end")
        ax.set_title(f"{variant}\n{name}.weight ({start.size} values)", fontsize=9)
        ax.set_xlabel("weight")
        ax.legend(fontsize=7)
    fig.suptitle(f"{arch}, {act}: weights at initialization and at the end")
    return fig


# ----------------------------------------------------------------------------- the report


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote."""

    out_dir: Path
    results_csv: Path
    summary_md: Path
    index_html: Path
    figures: list[Path]
    notes: list[str]


def build_report(
    runset: RunSet,
    out_dir: str | Path,
    *,
    target_acc: float | None = None,
    layer: str | None = None,
    hist_schemes: int = 4,
    wandb: bool = False,
    echo: Callable[[str], None] = lambda line: None,
) -> ReportFiles:
    """Write results.csv, summary.md, the figures and index.html into ``out_dir``.

    Args:
        target_acc: the accuracy for ``epochs_to_target`` (default: per architecture, 0.9 of
            the best accuracy any run reached).
        layer: the layer whose weight histograms are drawn (default: the middle weight layer).
        hist_schemes: schemes per weight-histogram figure (best, worst and in between).
        wandb: also log the figures and the results table to a W&B run (job_type "report").
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(runset.notes)
    set_target(runset, target_acc)
    runs = runset.runs
    results_csv = out_dir / "results.csv"
    runs.to_csv(results_csv, index=False)
    echo(f"{len(runs)} runs -> {results_csv}")
    boards = leaderboards(runs)
    if not boards:
        notes.append("no finished or diverged training runs: no leaderboards or curves")
    figures: list[tuple[str, str, Path]] = []  # (section, caption, path)

    def save(fig, name: str, section: str, caption: str) -> None:
        if fig is None:
            return
        path = out_dir / f"{_safe(name)}.png"
        fig.savefig(path)
        figures.append((section, caption, path))
        echo(f"  {path.name}")

    weight_skips: list[str] = []
    cells = sorted(
        {(a, b) for a, b in boards}
        | set(
            zip(
                runs[runs["has_step0"]]["architecture"],
                runs[runs["has_step0"]]["activation"],
                strict=True,
            )
        )
    )
    for arch in sorted({a for a, _ in cells}):
        save(
            figure_heatmap(runset, arch, boards),
            f"heatmap__{arch}",
            arch,
            f"{arch}: best val accuracy, scheme × activation",
        )
    for arch, act in cells:
        board = boards.get((arch, act))
        order = list(board["scheme"]) if board is not None else []
        save(
            figure_curves(runset, arch, act, order),
            f"curves__{arch}__{act}",
            arch,
            f"{arch}, {act}: learning curves per scheme",
        )
        save(
            figure_step0(runset, arch, act, order),
            f"step0__{arch}__{act}",
            arch,
            f"{arch}, {act}: step-0 activation and gradient std by depth",
        )
        if board is not None and hist_schemes > 0:
            chosen = pick_schemes(board, hist_schemes)
            save(
                figure_weights(runset, arch, act, chosen, layer, weight_skips),
                f"weights__{arch}__{act}",
                arch,
                f"{arch}, {act}: weights at start and end",
            )
    if weight_skips:
        notes.append(
            f"weight histograms left out for {len(weight_skips)} run(s): " + "; ".join(weight_skips)
        )
    summary_md = out_dir / "summary.md"
    summary_md.write_text(_summary_markdown(runset, boards, notes))
    index_html = out_dir / "index.html"
    index_html.write_text(_index_html(runset, boards, notes, figures))
    echo(f"summary -> {summary_md}; page -> {index_html}")
    if wandb:
        _log_to_wandb(runset, out_dir, [p for _, _, p in figures], results_csv)
    return ReportFiles(
        out_dir, results_csv, summary_md, index_html, [p for _, _, p in figures], notes
    )


def _counts(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    text = ", ".join(f"{n} {s}" for s, n in counts.items())
    stalled = int(runs["stalled"].sum())
    return text + (f" ({stalled} of them stalled at chance)" if stalled else "")


def _summary_markdown(
    runset: RunSet, boards: Mapping[tuple[str, str], pd.DataFrame], notes: Sequence[str]
) -> str:
    runs = runset.runs
    out = [
        "# initbench report",
        "",
        f"Source: `{runset.source}` — {len(runs)} runs: {_counts(runs)}.",
        "",
        "Leaderboards rank schemes by the mean over seeds of the best validation accuracy "
        "(± sample std; a run that never reached an evaluation counts as chance). *Stalled*: "
        f"finished within {STALL_MARGIN} of chance accuracy. *Epochs to target*: first epoch "
        "with val accuracy ≥ the target in results.csv (`target_acc`), mean over the runs that "
        "reached it (how many, when not all).",
        "",
    ]
    if notes:
        out += ["## Left out", ""] + [f"- {n}" for n in notes] + [""]
    if boards:
        out += ["## Best scheme per architecture × activation", ""]
        out += [markdown_table(*_best_grid(boards)), ""]
        out += ["## Leaderboards", ""]
        for (arch, act), board in boards.items():
            out += [f"### {arch} · {act}", "", markdown_table(*_board_rows(board)), ""]
    header, rows = _step0_rows(runset)
    if rows:
        out += [
            "## Signal propagation at step 0",
            "",
            "First seed of each scheme (diagnose.json).",
            "",
            markdown_table(header, rows),
            "",
        ]
    return "\n".join(out)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _index_html(
    runset: RunSet,
    boards: Mapping[tuple[str, str], pd.DataFrame],
    notes: Sequence[str],
    figures: Sequence[tuple[str, str, Path]],
) -> str:
    runs = runset.runs
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>initbench report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}"
        "figure{margin:0 0 1.5em}figcaption{color:#555;font-size:13px}</style></head><body>",
        "<h1>initbench report</h1>",
        f"<p>Source: <code>{html.escape(runset.source)}</code> — {len(runs)} runs: "
        f"{html.escape(_counts(runs))}. Files: <a href='results.csv'>results.csv</a>, "
        "<a href='summary.md'>summary.md</a>.</p>",
    ]
    if notes:
        parts.append("<h2>Left out</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    if boards:
        parts.append("<h2>Best scheme per architecture × activation</h2>")
        parts.append(_html_table(*_best_grid(boards)))
        parts.append("<h2>Leaderboards</h2>")
        for (arch, act), board in boards.items():
            parts.append(f"<h3>{html.escape(arch)} · {html.escape(act)}</h3>")
            parts.append(_html_table(*_board_rows(board)))
    header, rows = _step0_rows(runset)
    if rows:
        parts.append("<h2>Signal propagation at step 0</h2>")
        parts.append(_html_table(header, rows))
    if figures:
        parts.append("<h2>Figures</h2>")
        for section in sorted({s for s, _, _ in figures}):
            parts.append(f"<h3>{html.escape(section)}</h3>")
            for s, caption, path in figures:
                if s == section:
                    parts.append(
                        f"<figure><img src='{html.escape(path.name)}' alt='{html.escape(caption)}'>"
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _log_to_wandb(runset: RunSet, out_dir: Path, figures: Sequence[Path], results: Path) -> None:
    """Log the figures and the results table to one W&B run (offline if no server answers)."""
    import wandb

    project = "initbench"
    if re.fullmatch(r"[\w.-]+/[\w.-]+/[\w]+", runset.source):
        project = runset.source.split("/")[1]
    kwargs = dict(
        project=project,
        job_type="report",
        dir=str(out_dir),
        name=f"report-{_safe(Path(runset.source).name)}",
    )
    try:
        run = wandb.init(**kwargs)
    except (wandb.errors.UsageError, wandb.errors.CommError) as err:
        log.warning("W&B not reachable (%s): logging the report offline", err)
        run = wandb.init(mode="offline", **kwargs)
    run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in figures})
    run.log({"report/results": wandb.Table(dataframe=pd.read_csv(results))})
    run.finish()
