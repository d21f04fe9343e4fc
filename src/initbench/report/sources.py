"""Where runs come from: a local folder of run directories, or a W&B sweep; and the weight
samples a run wrote (``weights.npz``).

Only files the runs wrote are read: ``summary.json``, ``config.yaml``, ``metrics.jsonl``,
``diagnose.json`` and ``weights.npz`` locally; run config, summary, history and the uploaded
``diagnose.json`` on W&B. No model is rebuilt and no checkpoint is loaded.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from initbench.io import UnreadableFile, load_json, load_yaml, read_json, read_jsonl
from initbench.report.runset import CURVE_KEYS, RawRun, ReportError, RunSet, WeightPanel
from initbench.report.tables import assemble, cell_runs, first_seed
from initbench.telemetry.weights import WEIGHTS_FILE, read_weight_samples

log = logging.getLogger(__name__)

SKIP_DIRS = {"wandb", "tensorboard", ".submitit", ".hydra", "report"}
WANDB_STATES = {
    "finished": "finished",
    "crashed": "failed",
    "failed": "failed",
    "killed": "interrupted",
    "running": "running",
    "preempted": "interrupted",
}
WANDB_SWEEP = r"[\w.-]+/[\w.-]+/[\w]+"  # entity/project/sweep_id


# ----------------------------------------------------------------------------- local folders

# The summary.json fields the report reads, and their JSON types (null is always accepted).
SUMMARY_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "final": (dict,),
    "choices": (dict,),
    "init_scheme": (str,),
    "best_val_acc": (int, float),
    "epochs_completed": (int,),
    "diverged_at_step": (int,),
    "num_classes": (int,),
    "wall_s": (int, float),
    "n_params": (int,),
    "init_cost": (dict,),
}
HOLDOUT_KEYS = ("holdout/loss", "holdout/acc")
CONFIG_NODES = ("model", "dataset", "init", "activation", "optimizer", "trainer")


MAX_COUNT = 2**53  # a count beyond this (epochs, steps, parameters) is no run's: refused


def _short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for a note."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _wrong(value: Any, kinds: tuple[type, ...]) -> bool:
    """A JSON value that is neither null nor of ``kinds`` (a bool is never a number)."""
    return value is not None and (isinstance(value, bool) or not isinstance(value, kinds))


def malformed(summary: Any, config: Any) -> str | None:
    """Why a run's hand-edited or damaged files cannot be read, or None when they can."""
    if summary is not None:
        if not isinstance(summary, dict):
            return f"summary.json is a {type(summary).__name__}, not an object"
        for key, kinds in SUMMARY_FIELDS.items():
            value = summary.get(key)
            if _wrong(value, kinds) or (isinstance(value, int) and abs(value) > MAX_COUNT):
                return f"summary.json: {key} is {_short(value)}"  # no run counts that far
        for node in ("final", "init_cost"):
            for key, value in (summary.get(node) or {}).items():
                text = node == "init_cost" and key == "device"  # the only text in either
                if _wrong(value, (str,) if text else (int, float)):
                    return f"summary.json: {node}.{key} is {_short(value)}"
    if config is not None:
        if not isinstance(config, dict):
            return f"config.yaml is a {type(config).__name__}, not a mapping"
        for key in CONFIG_NODES:
            if key in config and not isinstance(config[key], dict):
                return f"config.yaml: {key} is {_short(config[key])}"
    return None


def _optional(load: Any, path: Path) -> Any:
    """``load(path)``, or None when there is no such file."""
    try:
        return load(path)
    except FileNotFoundError:
        return None


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
    raws, skipped = [], []
    for run_dir in dirs:
        try:
            summary = _optional(load_json, run_dir / "summary.json")
            diagnose = _optional(load_json, run_dir / "diagnose.json")
            config = _optional(load_yaml, run_dir / "config.yaml")
            curves = read_jsonl(run_dir / "metrics.jsonl")
            problem = malformed(summary, config)
        except UnreadableFile as err:  # a FIFO, a device, too big, too deep, not JSON
            problem = str(err)
        if problem is not None:
            log.warning("skipping %s: %s", run_dir, problem)
            skipped.append(
                f"{run_dir.relative_to(folder) if run_dir != folder else run_dir.name}: {problem}"
            )
            continue
        if not isinstance(config, dict) and isinstance(diagnose, dict):
            config = diagnose.get("config")
        stamp = run_dir / ("summary.json" if summary is not None else "diagnose.json")
        raws.append(
            RawRun(
                run_id=str(run_dir.relative_to(folder)) if run_dir != folder else run_dir.name,
                sweep=_sweep_of(run_dir, folder),
                config=config if isinstance(config, dict) else {},
                summary=summary if isinstance(summary, dict) else None,
                curves=curves,
                layers=list((diagnose or {}).get("layers") or []),
                run_dir=str(run_dir),
                mtime=stamp.stat().st_mtime if stamp.exists() else 0.0,
            )
        )
    if not raws:
        raise ReportError(f"no readable runs under {folder}: {'; '.join(skipped)}")
    runset = assemble(str(folder), raws)
    if skipped:
        runset.notes.append(
            f"malformed run files, {len(skipped)} run(s) skipped: {'; '.join(skipped)}"
        )
    return runset


# ----------------------------------------------------------------------------- W&B sweeps


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
        summary = dict(run.summary_metrics or {})  # the public API's summary, a plain dict
        status = summary.get("status") or WANDB_STATES.get(getattr(run, "state", ""), "running")
        final = {
            k.replace("/", "_"): summary[k]
            for k in (*CURVE_KEYS, *HOLDOUT_KEYS)
            if isinstance(summary.get(k), float)
        }
        curves = []
        try:
            rows = list(run.scan_history(keys=[*CURVE_KEYS, "trainer/step"]))
        except Exception as err:  # a run with no history
            log.warning("no history for W&B run %s: %s", run.id, err)
            rows = []
        # A run resumed from a checkpoint logs again the epochs between that checkpoint and the
        # stop, at the same trainer/step (W&B keeps both points): the last value per step wins.
        by_step = {row.get("trainer/step", row.get("_step")): row for row in rows}
        for i, (step, row) in enumerate(sorted(by_step.items(), key=lambda kv: kv[0] or 0)):
            curves.append({**row, "epoch": row.get("epoch", i + 1), "step": step})
        layers = []
        try:
            with tempfile.TemporaryDirectory() as tmp:
                run.file("diagnose.json").download(root=tmp, replace=True)
                layers = (read_json(Path(tmp) / "diagnose.json") or {}).get("layers") or []
        except Exception:  # not uploaded
            layers = []
        raws.append(
            RawRun(
                run_id=run.id,
                sweep=sweep_id,
                config=dict(run.config),
                summary={
                    **summary,
                    "status": status,
                    "final": summary.get("final") or final,
                    "wall_s": summary.get("wall_s", summary.get("_runtime")),
                    "init_cost": {  # the step-0 scalars init/* (W&B keeps their last value)
                        key: summary.get(f"init/{key}")
                        for key in ("seconds", "forward_passes", "backward_passes")
                    },
                },
                curves=curves,
                layers=list(layers),
            )
        )
    return assemble(path, raws)


def load_source(source: str | Path) -> RunSet:
    """A local folder if ``source`` is one; else ``entity/project/sweep_id`` on W&B."""
    text = str(source)
    if Path(text).exists():
        return load_local(text)
    if re.fullmatch(WANDB_SWEEP, text):
        return load_wandb(text)
    raise ReportError(f"{text} is neither a folder nor a W&B sweep path (entity/project/sweep_id)")


# ----------------------------------------------------------------------------- weight samples


def start_and_end_weights(
    run_dir: str | Path, layer: str | None
) -> tuple[str, int, np.ndarray, np.ndarray]:
    """A layer's weight samples at initialization and at the end, as the run wrote them
    (``weights.npz``): ``(layer, the layer's full size, start, end)``.

    Args:
        layer: the layer (``fc2``); None: the middle weight layer.

    Raises:
        ReportError: no weights.npz, an unreadable one, a stage missing, or no such layer.
    """
    try:
        samples = read_weight_samples(run_dir)
    except FileNotFoundError:
        raise ReportError(f"no {WEIGHTS_FILE}") from None
    except ValueError as err:
        raise ReportError(str(err)) from None
    init, final = samples.get("init") or {}, samples.get("final") or {}
    for stage, found in (("initial", init), ("final", final)):
        if not found:
            raise ReportError(f"no {stage} weights in {WEIGHTS_FILE}")
    names = [name for name in init if name in final]
    if layer is None:
        name = names[len(names) // 2] if names else None
    else:
        name = layer if layer in names else None
    if name is None:
        raise ReportError(f"no layer {layer!r} with weights")
    return name, init[name].numel, init[name].values, final[name].values


def weight_panels(
    runset: RunSet,
    arch: str,
    act: str,
    schemes: Sequence[str],
    layer: str | None,
    skipped: list[str],
) -> list[WeightPanel]:
    """Per scheme, its first seed's weight samples; runs that cannot give them are added to
    ``skipped`` with the reason."""
    cell = cell_runs(runset.runs, arch, act, trained=True)
    cell = cell[cell["run_dir"] != ""]
    panels = []
    for variant in schemes:
        row = first_seed(cell, variant)
        if row is None:
            continue
        try:
            name, numel, start, end = start_and_end_weights(row["run_dir"], layer)
        except ReportError as err:
            skipped.append(f"{row['run_id']}: {err}")
            continue
        panels.append(WeightPanel(variant, row["run_id"], name, numel, start, end))
    return panels
