"""Reports from runs: ``results.csv``, ``summary.md``, PNG figures and ``index.html``.

Two sources give the same report, because both are first read into one :class:`RunSet` (a
table of runs, a table of per-epoch curves, a table of step-0 layer statistics) and
everything is built from that alone:

- a local folder holding run directories (``summary.json``, ``config.yaml``,
  ``metrics.jsonl``, ``diagnose.json``, ``weights.npz``), e.g. a local sweep's folder,
  ``outputs/`` or a Hydra ``multirun/`` folder, searched recursively;
- a W&B sweep, ``entity/project/sweep_id``, through the public API (run config, summary and
  history; ``diagnose.json`` where the run uploaded it).

The report reads only what runs wrote: it never rebuilds a model or loads a checkpoint.

Modules, each importing only those above it:

- ``runset``: the shared types (RunSet, RawRun, WeightPanel, ReportError) and column names;
- ``ranking``: scores, the target accuracy, the leaderboards (bootstrap intervals, ties);
- ``tables``: labels, the runs table, the leaderboards' text, the step-0 rows and each
  figure's table;
- ``sources``: reading a local folder, a W&B sweep, and a run's weight samples;
- ``figures``: matplotlib figures drawn from those tables;
- ``render``: results.csv, summary.md, index.html and W&B logging (:func:`build_report`);
- ``wandb_page``: a W&B Report page for a sweep (:func:`wandb_report`, built offline;
  :func:`save_wandb_report` uploads it; needs ``wandb-workspaces``).

Usage::

    runs = load_source("outputs/local-sweeps/circles")
    files = build_report(runs, "outputs/local-sweeps/circles/report")
"""

from initbench.report.ranking import leaderboards, pick_schemes, set_target
from initbench.report.render import ReportFiles, build_report
from initbench.report.runset import COLUMNS, ReportError, RunSet, WeightPanel
from initbench.report.sources import (
    load_local,
    load_source,
    load_wandb,
    start_and_end_weights,
    weight_panels,
)
from initbench.report.tables import architecture_label, natural_key, scheme_labels
from initbench.report.wandb_page import save_wandb_report, split_sweep_path, wandb_report

__all__ = [
    "COLUMNS",
    "ReportError",
    "ReportFiles",
    "RunSet",
    "WeightPanel",
    "architecture_label",
    "build_report",
    "leaderboards",
    "load_local",
    "load_source",
    "load_wandb",
    "natural_key",
    "pick_schemes",
    "scheme_labels",
    "set_target",
    "start_and_end_weights",
    "save_wandb_report",
    "split_sweep_path",
    "wandb_report",
    "weight_panels",
]
