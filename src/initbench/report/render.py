"""The report's files: results.csv, the figures, summary.md and index.html, and optionally a
W&B run holding the figures and the results table (:func:`build_report`)."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from initbench.io import safe_name
from initbench.report.diagnosis import WHY_HEADER, why_cells, why_it_fails
from initbench.report.figures import (
    figure_curves,
    figure_edge_of_chaos,
    figure_heatmap,
    figure_step0,
    figure_weights,
)
from initbench.report.ranking import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    FEW_SEEDS,
    leaderboard_table,
    leaderboards,
    pick_schemes,
    set_target,
    tuned_leaderboards,
    tuned_table,
)
from initbench.report.runset import RunSet, WeightPanel
from initbench.report.sources import WANDB_SWEEP, weight_panels
from initbench.report.tables import (
    STALL_MARGIN,
    best_grid,
    board_rows,
    curve_bands,
    edge_of_chaos_tables,
    heatmap_grid,
    step0_lines,
    step0_rows,
    tuned_rows,
)
from initbench.telemetry.sinks import markdown_table

log = logging.getLogger(__name__)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula


def safe_csv(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell that a spreadsheet would run as a formula (``=cmd|...``,
    ``+``, ``-``, ``@``) prefixed with ``'`` (CSV injection); numbers are left as they are."""
    out = table.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v
            )
    return out


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote."""

    out_dir: Path
    results_csv: Path
    leaderboard_csv: Path
    tuned_csv: Path | None  # tuned.csv, where runs held out a validation split
    summary_md: Path
    index_html: Path
    figures: list[Path]
    notes: list[str]


def _weights_caption(arch: str, act: str, panels: Sequence[WeightPanel]) -> str:
    """Says when the histograms show a sample of the layer's values (weights.npz)."""
    sampled = dict.fromkeys(
        f"{p.layer}: a sample of {p.start.size} of the layer's {p.numel} values"
        for p in panels
        if p.start.size < p.numel
    )
    caption = f"{arch}, {act}: weights at start and end"
    return caption + (f" ({'; '.join(sampled)})" if sampled else "")


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
    safe_csv(runs).to_csv(results_csv, index=False)
    echo(f"{len(runs)} runs -> {results_csv}")
    boards = leaderboards(runs)
    leaderboard_csv = out_dir / "leaderboard.csv"
    safe_csv(leaderboard_table(boards)).to_csv(leaderboard_csv, index=False)
    echo(f"{len(boards)} leaderboards -> {leaderboard_csv}")
    if not boards:
        notes.append("no finished or diverged training runs: no leaderboards or curves")
    tuned = tuned_leaderboards(runs, runset.layers, STALL_MARGIN)
    tuned_csv = None
    if tuned:
        tuned_csv = out_dir / "tuned.csv"
        safe_csv(tuned_table(tuned)).to_csv(tuned_csv, index=False)
        echo(f"{len(tuned)} tuned leaderboards -> {tuned_csv}")
    figures: list[tuple[str, str, Path]] = []  # (section, caption, path)

    def save(fig, name: str, section: str, caption: str) -> None:
        if fig is None:
            return
        path = out_dir / f"{safe_name(name)}.png"
        fig.savefig(path)
        figures.append((section, caption, path))
        echo(f"  {path.name}")

    weight_skips: list[str] = []
    diagnosed = runs[runs["has_step0"]]
    cells = sorted(
        {(a, b) for a, b in boards}
        | set(zip(diagnosed["architecture"], diagnosed["activation"], strict=True))
    )
    for arch in sorted({a for a, _ in cells}):
        grid = heatmap_grid(boards, arch)
        if grid.shape[1] < 2:  # one activation: the leaderboard says it all
            continue
        save(
            figure_heatmap(grid, arch),
            f"heatmap__{arch}",
            arch,
            f"{arch}: best val accuracy, scheme × activation",
        )
    for arch, act in cells:
        board = boards.get((arch, act))
        order = list(board["scheme"]) if board is not None else []
        save(
            figure_curves(curve_bands(runset, arch, act), arch, act, order),
            f"curves__{arch}__{act}",
            arch,
            f"{arch}, {act}: learning curves per scheme",
        )
        save(
            figure_step0(step0_lines(runset, arch, act, order), arch, act),
            f"step0__{arch}__{act}",
            arch,
            f"{arch}, {act}: step-0 activation and gradient std by depth",
        )
        if board is not None and hist_schemes > 0:
            chosen = pick_schemes(board, hist_schemes)
            panels = weight_panels(runset, arch, act, chosen, layer, weight_skips)
            save(
                figure_weights(panels, arch, act),
                f"weights__{arch}__{act}",
                arch,
                _weights_caption(arch, act, panels),
            )
    for table in edge_of_chaos_tables(runset):
        save(
            figure_edge_of_chaos(table),
            f"edge_of_chaos__{table['dataset']}__{table['activation']}__sb2_{table['sigma_b2']:g}",
            "edge of chaos",
            f"{table['dataset']}, {table['activation']}, σ_b² = {table['sigma_b2']:g}: best val "
            "accuracy by depth and σ_w² with 6 ξ_c from mean-field theory (Schoenholz et al. 2017, "
            "Fig. 5), and the χ₁ = 1 phase diagram",
        )
    if weight_skips:
        notes.append(
            f"weight histograms left out for {len(weight_skips)} run(s): " + "; ".join(weight_skips)
        )
    summary_md = out_dir / "summary.md"
    why = why_it_fails(runset, boards)
    if not why.empty:
        safe_csv(why).to_csv(out_dir / "why.csv", index=False)
    summary_md.write_text(_summary_markdown(runset, boards, notes, tuned, why))
    index_html = out_dir / "index.html"
    index_html.write_text(_index_html(runset, boards, notes, figures, tuned, why))
    echo(f"summary -> {summary_md}; page -> {index_html}")
    if wandb:
        _log_to_wandb(runset, out_dir, [p for _, _, p in figures], results_csv)
    return ReportFiles(
        out_dir,
        results_csv,
        leaderboard_csv,
        tuned_csv,
        summary_md,
        index_html,
        [p for _, _, p in figures],
        notes,
    )


LEADERBOARD_TEXT = (
    "Leaderboards rank schemes by the mean over seeds of the best validation accuracy "
    "(± sample std; a run that never reached an evaluation counts as chance). *Stalled*: "
    f"finished within {STALL_MARGIN} of chance accuracy. *Epochs to target*: first epoch "
    "with val accuracy ≥ the target in results.csv (`target_acc`), mean over the runs that "
    "reached it (how many, when not all)."
)
STATISTICS_TEXT = (
    "*95% CI*: a percentile bootstrap over seeds of the mean best val accuracy "
    f"({BOOTSTRAP_RESAMPLES} resamples of the seeds with replacement, fixed seed {BOOTSTRAP_SEED}, "
    "so the same runs give the same intervals); undefined for 1 seed, and with "
    f"{FEW_SEEDS} seeds or fewer it cannot be wider than the seeds' range, so it understates the "
    "uncertainty: read it as wide. *Tied with best*: the scheme's interval overlaps the best "
    "scheme's (its upper end ≥ the best's lower end), i.e. the data cannot tell them apart at "
    "this level; `?` where an interval is undefined. All columns are in leaderboard.csv."
)


def _counts(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    text = ", ".join(f"{n} {s}" for s, n in counts.items())
    stalled = int(runs["stalled"].sum())
    return text + (f" ({stalled} of them stalled at chance)" if stalled else "")


TUNED_TEXT = (
    "Each scheme (with its activation) at the learning rate whose mean final accuracy on the "
    "held-out training examples (`trainer.holdout`) is highest, ranked by the mean final "
    "accuracy on the test split at that rate; a diverged run counts as chance. *lr (of)*: the "
    "rate picked, of those tried. *Init cost*: mean seconds the init took before training, with "
    "its forward/backward passes through the model, on that device. *Step 0*: the first seed's "
    "last-layer activation std, first-layer gradient std, and mean cosine between examples at "
    "the last hidden layer (near 1: the network maps every input alike) before training. All "
    "columns are in tuned.csv."
)


WHY_TEXT = (
    "Each scheme that stalls, diverges or trails the best (not tied with it), with the first "
    "cause its step-0 report shows (first seed): symmetric weights, a non-finite forward pass, "
    "activations whose RMS leaves [1e-2, 1e2] with depth, dead or saturated units, gradients "
    "that vanish before the first layer, inputs mapped alike; and the mean-field prediction "
    "at the measured σ_w² where it applies."
)


def _inline_html(text: str) -> str:
    """``*emphasis*`` and ```code``` of a Markdown sentence as HTML, the rest escaped."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


def _text(value: object) -> str:
    """A name from a config or a path as Markdown text: HTML escaped, never markup."""
    return html.escape(str(value), quote=False)


def _summary_markdown(
    runset: RunSet,
    boards: Mapping[tuple[str, str], pd.DataFrame],
    notes: Sequence[str],
    tuned: Mapping[str, pd.DataFrame] | None = None,
    why: pd.DataFrame | None = None,
) -> str:
    runs = runset.runs
    out = [
        "# initbench report",
        "",
        f"Source: `{runset.source}` — {len(runs)} runs: {_counts(runs)}.",
        "",
        LEADERBOARD_TEXT,
        "",
        STATISTICS_TEXT,
        "",
    ]
    if notes:
        out += ["## Left out", ""] + [f"- {_text(n)}" for n in notes] + [""]
    if tuned:
        out += ["## Each scheme at its best learning rate", "", TUNED_TEXT, ""]
        for arch, board in tuned.items():
            out += [f"### {_text(arch)}", "", markdown_table(*tuned_rows(board)), ""]
    if boards:
        out += ["## Best scheme per architecture × activation", ""]
        out += [markdown_table(*best_grid(boards)), ""]
        out += ["## Leaderboards", ""]
        for (arch, act), board in boards.items():
            out += [f"### {_text(arch)} · {_text(act)}", "", markdown_table(*board_rows(board)), ""]
    if why is not None and not why.empty:
        out += ["## Why the others fail", "", WHY_TEXT, ""]
        for arch, act, rows in why_cells(why):
            out += [f"### {_text(arch)} · {_text(act)}", "", markdown_table(WHY_HEADER, rows), ""]
    header, rows = step0_rows(runset)
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
    tuned: Mapping[str, pd.DataFrame] | None = None,
    why: pd.DataFrame | None = None,
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
        "<a href='leaderboard.csv'>leaderboard.csv</a>, <a href='summary.md'>summary.md</a>.</p>",
    ]
    if notes:
        parts.append("<h2>Left out</h2><ul>")
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    if tuned:
        parts.append("<h2>Each scheme at its best learning rate</h2>")
        parts.append(f"<p>{_inline_html(TUNED_TEXT)}</p>")
        for arch, board in tuned.items():
            parts.append(f"<h3>{html.escape(arch)}</h3>")
            parts.append(_html_table(*tuned_rows(board)))
    if boards:
        parts.append("<h2>Best scheme per architecture × activation</h2>")
        parts.append(_html_table(*best_grid(boards)))
        parts.append("<h2>Leaderboards</h2>")
        parts.append(f"<p>{_inline_html(LEADERBOARD_TEXT)}</p>")
        parts.append(f"<p>{_inline_html(STATISTICS_TEXT)}</p>")
        for (arch, act), board in boards.items():
            parts.append(f"<h3>{html.escape(arch)} · {html.escape(act)}</h3>")
            parts.append(_html_table(*board_rows(board)))
    if why is not None and not why.empty:
        parts.append("<h2>Why the others fail</h2>")
        parts.append(f"<p>{_inline_html(WHY_TEXT)}</p>")
        for arch, act, rows in why_cells(why):
            parts.append(f"<h3>{html.escape(arch)} · {html.escape(act)}</h3>")
            parts.append(_html_table(WHY_HEADER, rows))
    header, rows = step0_rows(runset)
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
    if re.fullmatch(WANDB_SWEEP, runset.source):
        project = runset.source.split("/")[1]
    kwargs = dict(
        project=project,
        job_type="report",
        dir=str(out_dir),
        name=f"report-{safe_name(Path(runset.source).name)}",
    )
    try:
        run = wandb.init(**kwargs)
    except (wandb.errors.UsageError, wandb.errors.CommError) as err:
        log.warning("W&B not reachable (%s): logging the report offline", err)
        run = wandb.init(mode="offline", **kwargs)
    run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in figures})
    run.log({"report/results": wandb.Table(dataframe=pd.read_csv(results))})
    run.finish()
