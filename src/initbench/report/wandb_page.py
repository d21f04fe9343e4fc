"""A W&B Report (a page on the W&B server) for one sweep, built with ``wandb-workspaces``.

:func:`wandb_report` builds the page as objects and talks to nobody, so it is tested offline;
:func:`save_wandb_report` uploads it (``Report.save()``: needs a server and a login). The
package is imported lazily: nothing else in initbench needs it
(``pip install wandb-workspaces``, in the ``report`` extra).

The page, top to bottom: the leaderboard (the report's tables as Markdown, and the sweep's
runs table, best ``val/acc`` first); val accuracy, val loss and train loss against the step,
grouped by init (mean, min-max band); a parallel-coordinates panel init x architecture x
activation -> val/acc; the per-layer histograms (weights, activations, gradients) of a few
layers over training; the step-0 signal-propagation figure and table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from initbench.report.diagnosis import WHY_HEADER, why_cells, why_it_fails
from initbench.report.ranking import leaderboards
from initbench.report.runset import ReportError, RunSet
from initbench.report.tables import best_grid, board_rows
from initbench.telemetry.sinks import markdown_table

WANDB_SWEEP_PATH = r"[\w.-]+/[\w.-]+/\w+"  # entity/project/sweep_id
STEP = "trainer/step"  # every metric is logged against it (telemetry.sinks.WandbSink)
# Lines a plot draws: W&B's default is 10 runs or groups, fewer than a sweep's init groups.
MAX_LINES = 100
CURVES = (("val/acc", "validation accuracy"), ("val/loss", "validation loss"),
          ("train/loss", "training loss"))  # fmt: skip
GROUP_BY = "init.name"  # the run config's scheme (the W&B config is the resolved run config)
PARALLEL = (  # (config key or summary metric, label)
    ("config", "init.name", "init"),
    ("config", "experiment_name", "architecture"),
    ("config", "activation.name", "activation"),
    ("summary", "val/acc", "val/acc"),
)
HISTOGRAMS = ("weights", "acts", "grads")  # telemetry's per-layer histogram tags
STEP0_FIGURE = "diagnose/std_vs_depth"  # diagnose.FIGURE_TAG
STEP0_TABLE = "diagnose/layers"  # diagnose.TABLE_TAG


def _wr():
    try:
        import wandb_workspaces.reports.v2 as wr
    except ImportError:
        raise ReportError(
            "--wandb-report needs the wandb-workspaces package: pip install wandb-workspaces "
            "(or pip install -e '.[report]')"
        ) from None
    return wr


def split_sweep_path(path: str) -> tuple[str, str, str]:
    """``entity/project/sweep_id`` -> its three parts (ReportError naming the form if not)."""
    text = path.strip().rstrip("/")
    if not re.fullmatch(WANDB_SWEEP_PATH, text):
        raise ReportError(f"--wandb-report takes entity/project/sweep_id (got {path!r})")
    entity, project, sweep = text.split("/")
    return entity, project, sweep


def histogram_layers(runset: RunSet | None, layer: str | None = None, n: int = 3) -> list[str]:
    """The layers whose histograms the page shows: ``layer`` if given, else the first, middle
    and last weight layer of the first run with a step-0 report (none known: [])."""
    if layer:
        return [layer]
    if runset is None or runset.layers.empty:
        return []
    first = runset.layers[runset.layers["run_id"] == runset.layers["run_id"].iloc[0]]
    names = list(dict.fromkeys(first.sort_values("depth")["name"]))
    if len(names) <= n:
        return names
    picks = sorted({round(i * (len(names) - 1) / (n - 1)) for i in range(n)})
    return [names[i] for i in picks]


def leaderboard_markdown(runset: RunSet | None) -> str:
    """The best scheme per architecture x activation and each cell's leaderboard (the
    report's summary.md tables), as Markdown; a pointer to the runs table if there are none."""
    boards = leaderboards(runset.runs) if runset is not None and not runset.runs.empty else {}
    if not boards:
        return "No finished runs were read; the runs table below lists the sweep's runs."
    out = ["**Best scheme per architecture × activation**", "", markdown_table(*best_grid(boards))]
    for (arch, act), board in boards.items():
        out += ["", f"**{arch} · {act}**", "", markdown_table(*board_rows(board))]
    why = why_it_fails(runset, boards)
    if not why.empty:
        out += ["", "**Why the others fail** (the first cause each one's step-0 report shows)"]
        for arch, act, rows in why_cells(why):
            out += ["", f"**{arch} · {act}**", "", markdown_table(WHY_HEADER, rows)]
    return "\n".join(out)


def wandb_report(
    sweep_path: str,
    runset: RunSet | None = None,
    *,
    layer: str | None = None,
    title: str | None = None,
) -> Any:
    """The W&B Report of the sweep ``entity/project/sweep_id`` (a ``wr.Report``, not saved).

    Args:
        runset: the sweep's runs as the report read them (leaderboard tables, layer names);
            None: the page holds only the W&B panels.
        layer: the layer whose histograms are shown (default: first, middle and last).
        title: the page title (default ``initbench: sweep <id>``).
    """
    wr = _wr()
    entity, project, sweep = split_sweep_path(sweep_path)

    def runs(name: str, groupby: Sequence[str] = ()) -> Any:
        return wr.Runset(
            entity=entity,
            project=project,
            name=name,
            # the sweep's runs, and a packed sweep's members (their own runs, tagged with it)
            filters=f"Sweep = '{sweep}' or Tags() in ['sweep-{sweep}']",
            groupby=list(groupby),
            order=[wr.OrderBy(wr.SummaryMetric("val/acc"), ascending=False)],
        )

    curves = [
        wr.LinePlot(
            title=label,
            x=STEP,
            y=[key],
            groupby=wr.Config(GROUP_BY),
            groupby_aggfunc="mean",
            groupby_rangefunc="minmax",
            max_runs_to_show=MAX_LINES,
            title_x="optimizer step",
            title_y=key,
        )
        for key, label in CURVES
    ]
    parallel = wr.ParallelCoordinatesPlot(
        title="init × architecture × activation → val/acc",
        columns=[
            wr.ParallelCoordinatesPlotColumn(
                metric=wr.Config(key) if kind == "config" else wr.SummaryMetric(key),
                display_name=label,
            )
            for kind, key, label in PARALLEL
        ],
    )
    layers = histogram_layers(runset, layer)
    if layers:
        histograms = [
            wr.LinePlot(
                title=f"{kind}/{name}", x=STEP, y=[f"{kind}/{name}"], max_runs_to_show=MAX_LINES
            )  # fmt: skip
            for name in layers
            for kind in HISTOGRAMS
        ]
    else:  # layer names unknown: every layer's, by pattern
        histograms = [
            wr.LinePlot(
                title=f"{kind}/*", x=STEP, metric_regex=f"^{kind}/.*", max_runs_to_show=MAX_LINES
            )  # fmt: skip
            for kind in HISTOGRAMS
        ]
    blocks = [
        wr.H1(text=title or f"initbench: sweep {sweep}"),
        wr.P(
            text=f"Sweep {entity}/{project}/{sweep}, built by scripts/report.py "
            "--wandb-report (initbench). Leaderboards rank schemes by the mean over seeds of "
            "the best validation accuracy."
        ),
        wr.H2(text="Leaderboard"),
        wr.MarkdownBlock(text=leaderboard_markdown(runset)),
        wr.PanelGrid(runsets=[runs("runs, best val/acc first")], panels=[]),
        wr.H2(text="Training curves, grouped by init"),
        wr.PanelGrid(runsets=[runs("runs by init", [GROUP_BY])], panels=curves),
        wr.H2(text="Init × architecture × activation"),
        wr.PanelGrid(runsets=[runs("runs")], panels=[parallel]),
        wr.H2(text="Per-layer histograms over training"),
        wr.P(
            text="Weights, activations and gradients of "
            + (", ".join(layers) if layers else "every layer")
            + f", every telemetry snapshot ({', '.join(f'{k}/<layer>' for k in HISTOGRAMS)})."
        ),
        wr.PanelGrid(runsets=[runs("runs")], panels=histograms),
        wr.H2(text="Step 0: signal propagation"),
        wr.PanelGrid(
            runsets=[runs("runs")],
            panels=[
                wr.MediaBrowser(
                    title="activation and gradient std against depth",
                    media_keys=[STEP0_FIGURE],
                    mode="gallery",
                ),
                wr.WeavePanelSummaryTable(table_name=STEP0_TABLE),
            ],
        ),  # fmt: skip
    ]
    return wr.Report(
        entity=entity,
        project=project,
        title=(title or f"initbench: sweep {sweep}")[:128],
        description="Leaderboard, curves by init, init × architecture × activation, "
        "per-layer histograms and the step-0 report of one sweep.",
        blocks=blocks,
        width="fluid",
    )


def save_wandb_report(report: Any) -> str:
    """Upload ``report`` to the W&B server; its URL. ReportError if it cannot be saved."""
    try:
        report.save()
    except Exception as err:  # not logged in, no server, no such project
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ReportError(f"cannot save the W&B report: {first}") from None
    return report.url
