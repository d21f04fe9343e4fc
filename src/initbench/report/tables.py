"""The report's tables: labels, the runs table (results.csv) assembled from raw runs, the
leaderboards' rows as text (``ranking`` computes them), the step-0 rows, and the tables each
figure draws.

Labels: a run's **architecture** is its model and data (``mlp2x256/fashion_mnist``,
``cnn30/cifar10``); its **scheme** is the canonical initializer plus the hparams that differ
from the scheme's defaults or between runs (``normal(std=10)``); when the training setup
(optimizer, lr, batch size, epochs) differs between runs of one architecture, it is added to
the scheme's label too (the **variant**), so the leaderboards never pool different setups.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from initbench import inits
from initbench.report.ranking import FEW_SEEDS, score, set_target
from initbench.report.runset import COLUMNS, CURVE_KEYS, TRAINED, RawRun, RunSet, variant_labels
from initbench.report.runset import fmt_value as _fmt

# Fallback for runs whose summary.json has no num_classes (written before it was recorded,
# diagnose-only runs, W&B summaries); gaussian takes it from its config.
NUM_CLASSES = {"circles": 2, "fashion_mnist": 10, "cifar10": 10}
STALL_MARGIN = 0.02  # a finished run whose best val accuracy is within this of chance stalled
INT_COLUMNS = ("seed", "batch_size", "epochs", "epochs_completed", "diverged_at_step", "n_params")
CURVE_PANELS = ("val/acc", "val/loss", "train/loss")  # the learning-curve figure's panels
STEP0_PANELS = ("act_std", "grad_std")  # the step-0 figure's panels


# ----------------------------------------------------------------------------- labels


# The shipped models' targets, labelled by their shape (mlp2x256, cnn30).
SHIPPED_LABELS = {"initbench.models.MLP": "mlp", "initbench.models.PlainCNN": "cnn",
                  "initbench.models.ResNet": "resnet"}  # fmt: skip


def architecture_label(cfg: Mapping[str, Any]) -> str:
    """Model shape and dataset: ``mlp2x256/fashion_mnist``, ``mlp10-5/circles``,
    ``cnn30/cifar10``, ``resnet110/fashion_mnist`` (``-bn`` with batch norm); any other model
    is its name with its own arguments, ``tinyconv(width=32)/cifar10``."""
    model = cfg.get("model") or {}
    dataset = (cfg.get("dataset") or {}).get("name", "?")
    kind = SHIPPED_LABELS.get(model.get("_target_"), model.get("arch"))  # arch: older runs
    if kind == "mlp":
        widths = model.get("widths")
        if not widths:  # depth x width, without a list of depth widths (a refused run's 10**8)
            shape = f"mlp{model.get('depth')}x{model.get('width')}"
        elif len(set(widths)) == 1:
            shape = f"mlp{len(widths)}x{widths[0]}"
        else:
            shape = "mlp" + "-".join(str(w) for w in widths)
    elif kind in ("cnn", "resnet"):
        shape = f"{kind}{model.get('depth')}" + ("-bn" if model.get("norm") == "batch" else "")
    else:
        args = {k: v for k, v in model.items() if k not in ("_target_", "name", "arch")}
        shape = str(model.get("name", "?"))
        if args:
            shape += "(" + ",".join(f"{k}={_fmt(v)}" for k, v in sorted(args.items())) + ")"
    return f"{shape}/{dataset}"


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


# ----------------------------------------------------------------------------- the runs table


def num_classes(cfg: Mapping[str, Any], summary: Mapping[str, Any] | None) -> int | None:
    """The run's class count: from summary.json; for older runs, from the config or the
    known datasets."""
    if (summary or {}).get("num_classes"):
        return int(summary["num_classes"])
    dataset = cfg.get("dataset") or {}
    return dataset.get("num_classes") or NUM_CLASSES.get(dataset.get("name"))


def assemble(source: str, raws: Sequence[RawRun]) -> RunSet:
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
        cost = (summary or {}).get("init_cost") or {}
        n_classes = num_classes(cfg, summary)
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
                "final_holdout_acc": final.get("holdout_acc"),
                "init_seconds": cost.get("seconds"),
                "init_forward_passes": cost.get("forward_passes"),
                "init_backward_passes": cost.get("backward_passes"),
                "init_device": cost.get("device"),
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
                    # null in metrics.jsonl is a non-finite value: NaN, never dropped
                    **{k: np.nan if r.get(k) is None else r.get(k) for k in CURVE_KEYS},
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
    runs["variant"] = variant_labels(runs)
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


def _drop_duplicates(runs: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Keep the newest of runs that repeat one combination (e.g. from two sweeps); a step-0
    report alone (``src/diagnose.py``) never stands in for a trained run, nor the reverse."""
    runs = runs.sort_values("_mtime").assign(_diagnosed=runs["status"] == "diagnosed")
    key = ["architecture", "activation", "variant", "seed", "_diagnosed"]
    done = runs[runs["status"].isin(TRAINED + ("diagnosed",))]
    dropped = done[done.duplicated(subset=key, keep="last")]
    if len(dropped):
        notes.append(
            f"{len(dropped)} run(s) repeat a combination already present (same architecture, "
            f"activation, scheme and seed); kept the newest, left out: "
            + ", ".join(dropped["run_id"].astype(str))
        )
    runs = runs.drop(index=dropped.index).drop(columns=["_mtime", "_diagnosed"])
    return runs.sort_values("run_id").reset_index(drop=True)


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


def cell_runs(runs: pd.DataFrame, arch: str, act: str, *, trained: bool) -> pd.DataFrame:
    """The runs of one architecture × activation cell (only finished or diverged ones when
    ``trained``)."""
    cell = runs[(runs["architecture"] == arch) & (runs["activation"] == act)]
    return cell[cell["status"].isin(TRAINED)] if trained else cell


def first_seed(cell: pd.DataFrame, variant: str) -> pd.Series | None:
    """The run that stands for ``variant`` in per-run figures: the lowest seed (None: none)."""
    candidates = cell[cell["variant"] == variant].sort_values(["seed", "run_id"])
    return None if candidates.empty else candidates.iloc[0]


# ----------------------------------------------------------------------------- leaderboard text


def ci_text(row: Mapping[str, Any]) -> str:
    """The interval in words: ``[0.81, 0.85]``, flagged when the seeds are too few."""
    if row["runs"] < 2 or pd.isna(row["ci_low"]):
        return "undefined (1 seed)"
    text = f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]"
    return text + (f" (only {row['runs']} seeds: unreliable, read as wide)"
                   if row["runs"] <= FEW_SEEDS else "")  # fmt: skip


def _tied_text(value: Any, rank: int) -> str:
    if rank == 1:
        return "best"
    return "?" if value is None or pd.isna(value) else ("yes" if value else "no")


def _cell(value: Any, digits: int = 4) -> str:
    if value is None or pd.isna(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def board_rows(board: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """A leaderboard as header and text rows, for Markdown and HTML."""
    header = [
        "rank",
        "scheme",
        "runs",
        "best val acc (mean ± std)",
        "95% CI (bootstrap over seeds)",
        "tied with best",
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
            ci_text(r),
            _tied_text(r["tied_with_best"], r["rank"]),
            _cell(r["final_val_acc_mean"]),
            _cell(r["epochs_to_target"], 1)
            + (f" ({r['reached_target']}/{r['runs']})" if r["reached_target"] < r["runs"] else ""),
            str(r["diverged"]),
            str(r["stalled"]),
        ]
        for _, r in board.iterrows()
    ]
    return header, rows


def best_grid(boards: Mapping[tuple[str, str], pd.DataFrame]) -> tuple[list[str], list[list[str]]]:
    """Architecture × activation: the top scheme of each leaderboard and its accuracy."""
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


def step0_rows(runset: RunSet) -> tuple[list[str], list[list[str]]]:
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


# ----------------------------------------------------------------------------- figure tables


def curve_bands(runset: RunSet, arch: str, act: str) -> pd.DataFrame:
    """Per scheme, curve (CURVE_PANELS) and epoch over the cell's trained runs: ``mean``,
    ``min`` and ``max`` over seeds, and ``n`` the scheme's number of runs with curves."""
    cell = cell_runs(runset.runs, arch, act, trained=True)
    curves = runset.curves.merge(cell[["run_id", "variant"]])
    parts = []
    for variant, c in curves.groupby("variant", sort=False):
        n = c["run_id"].nunique()
        for key in CURVE_PANELS:
            values = pd.to_numeric(c[key], errors="coerce")
            stats = values.groupby(c["epoch"]).agg(["mean", "min", "max"]).dropna()
            parts.append(stats.reset_index().assign(variant=variant, key=key, n=n))
    columns = ["variant", "key", "epoch", "mean", "min", "max", "n"]
    return pd.concat(parts)[columns] if parts else pd.DataFrame(columns=columns)


def heatmap_grid(boards: Mapping[tuple[str, str], pd.DataFrame], arch: str) -> pd.DataFrame:
    """Scheme × activation: mean best val accuracy (NaN: no such runs); rows best on average
    first (empty: the architecture has no leaderboard)."""
    cells = {act: b for (a, act), b in boards.items() if a == arch}
    if not cells:
        return pd.DataFrame()
    acts = sorted(cells)
    schemes = sorted({s for b in cells.values() for s in b["scheme"]}, key=natural_key)
    grid = np.full((len(schemes), len(acts)), np.nan)
    for j, act in enumerate(acts):
        for _, r in cells[act].iterrows():
            grid[schemes.index(r["scheme"]), j] = r["best_val_acc_mean"]
    order = np.argsort(-np.nanmean(np.where(np.isnan(grid), -1.0, grid), axis=1), kind="stable")
    return pd.DataFrame(grid[order], index=[schemes[i] for i in order], columns=acts)


def step0_lines(runset: RunSet, arch: str, act: str, order: Sequence[str]) -> pd.DataFrame:
    """Step-0 ``act_std`` and ``grad_std`` by ``depth``, per scheme (its first seed): the
    schemes in ``order`` first, then the others."""
    cell = cell_runs(runset.runs, arch, act, trained=False)
    cell = cell[cell["has_step0"]]
    present = set(cell["variant"])
    variants = [v for v in order if v in present] + sorted(present - set(order), key=natural_key)
    parts = []
    for variant in variants:
        run_id = first_seed(cell, variant)["run_id"]
        layers = runset.layers[runset.layers["run_id"] == run_id].sort_values("depth")
        part = pd.DataFrame({"variant": variant, "depth": layers["depth"]})
        for key in STEP0_PANELS:
            part[key] = pd.to_numeric(layers[key], errors="coerce") if key in layers else np.nan
        parts.append(part)
    columns = ["variant", "depth", *STEP0_PANELS]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


# ----------------------------------------------------------------------------- edge of chaos

XI_C_FACTOR = 6  # Schoenholz et al. 2017: nets train up to depth ~6 xi_c
THEORY_POINTS = 31  # sigma_w2 values the 6 xi_c curve is computed at


def edge_of_chaos_tables(runset: RunSet) -> list[dict[str, Any]]:
    """The trainability grid of mean_field runs, next to mean-field theory.

    For each (dataset, activation, sigma_b2) whose trained mean_field runs vary both sigma_w2
    and model.depth (at least two values of each): ``grid``, the mean over seeds of the best val
    accuracy (a run never evaluated counts as chance) by depth (rows) x sigma_w2 (columns);
    ``theory``, 6 xi_c against sigma_w2 (:func:`initbench.theory.mean_field`); ``phase``, the
    chi1 = 1 line sigma_w2(sigma_b2) (:func:`initbench.theory.critical_line`); ``critical``,
    the critical sigma_w2 at this sigma_b2. Empty when no run set qualifies.
    """
    runs = runset.runs
    trained = runs[runs["status"].isin(TRAINED) & (runs["init"].map(_canonical) == "mean_field")]
    rows = []
    for _, r in trained.iterrows():
        cfg = runset.configs.get(r["run_id"]) or {}
        hp = {**_scheme_defaults("mean_field"), **_init_hparams(cfg)}
        depth = (cfg.get("model") or {}).get("depth")
        act = dict(cfg.get("activation") or {})
        act.pop("name", None)
        if depth is None:
            continue
        rows.append(
            {
                "dataset": r["dataset"],
                "activation": r["activation"],
                "act_params": json.dumps(act, sort_keys=True),
                "sigma_b2": float(hp["sigma_b2"]),
                "sigma_w2": float(hp["sigma_w2"]),
                "depth": int(depth),
                "score": score(r),
            }
        )
    if not rows:
        return []
    table = pd.DataFrame(rows)
    out = []
    keys = ["dataset", "activation", "act_params", "sigma_b2"]
    for (dataset, act, act_params, sigma_b2), g in table.groupby(keys, sort=True):
        if g["sigma_w2"].nunique() < 2 or g["depth"].nunique() < 2:
            continue
        grid = g.pivot_table(index="depth", columns="sigma_w2", values="score", aggfunc="mean")
        theory, phase, critical = _theory_curves(
            act, json.loads(act_params), sigma_b2, (g["sigma_w2"].min(), g["sigma_w2"].max())
        )
        out.append(
            {
                "dataset": dataset,
                "activation": act,
                "sigma_b2": sigma_b2,
                "grid": grid.sort_index().sort_index(axis=1),
                "theory": theory,
                "phase": phase,
                "critical": critical,
            }
        )
    return out


def _theory_curves(
    activation: str, params: dict[str, Any], sigma_b2: float, span: tuple[float, float]
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """6 xi_c over the swept sigma_w2 span; the chi1 = 1 line; the critical sigma_w2."""
    from initbench import theory  # numpy and torch: imported only when a figure needs it

    lo, hi = span
    sigma_w2 = np.linspace(lo, hi, THEORY_POINTS)
    xi = [theory.mean_field(activation, float(s), sigma_b2, **params).xi_c for s in sigma_w2]
    curve = pd.DataFrame({"sigma_w2": sigma_w2, "xi_c": xi})
    curve["depth_limit"] = XI_C_FACTOR * curve["xi_c"]
    sigma_b2_axis = np.linspace(0.0, max(0.5, 2 * sigma_b2), 11)
    line = theory.critical_line(activation, sigma_b2_axis, **params)
    phase = pd.DataFrame({"sigma_b2": sigma_b2_axis, "sigma_w2_critical": line})
    try:
        critical = theory.critical_sigma_w2(activation, sigma_b2, **params)
    except theory.NoTransition:
        critical = math.nan
    return curve, phase, critical


def tuned_rows(board: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """A tuned leaderboard (:func:`initbench.report.ranking.tuned_leaderboards`) as header and
    text rows, for Markdown and HTML."""
    header = [
        "rank",
        "activation",
        "scheme",
        "lr (of)",
        "runs",
        "holdout acc",
        "test acc (mean ± std)",
        "95% CI (bootstrap over seeds)",
        "tied with best",
        "diverged",
        "stalled",
        "init cost",
        "act std (last, step 0)",
        "grad std (first, step 0)",
        "cosine (last hidden, step 0)",
    ]
    rows = [
        [
            str(r["rank"]),
            str(r["activation"]),
            str(r["scheme"]),
            f"{r['lr']:g} ({r['lrs']})" if pd.notna(r["lr"]) else "–",
            str(r["runs"]),
            _cell(r["holdout_acc_mean"]),
            f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}",
            ci_text(r),
            _tied_text(r["tied_with_best"], r["rank"]),
            str(r["diverged"]),
            str(r["stalled"]),
            cost_text(r),
            _g(r["act_std_last"]),
            _g(r["grad_std_first"]),
            _g(r["act_cos_last_hidden"]),
        ]
        for _, r in board.iterrows()
    ]
    return header, rows


def cost_text(row: Mapping[str, Any]) -> str:
    """What the init spent, in words: ``12.3 s, 501 fwd / 1500 bwd (cpu)``; ``–`` unrecorded."""
    seconds = row["init_seconds"]
    if seconds is None or pd.isna(seconds):
        return "–"
    passes = ""
    if pd.notna(row["init_forward_passes"]) and row["init_forward_passes"] > 0:
        passes = f", {row['init_forward_passes']:.0f} fwd / {row['init_backward_passes']:.0f} bwd"
    device = f" ({row['init_device']})" if isinstance(row["init_device"], str) else ""
    return f"{seconds:.3g} s{passes}{device}"
