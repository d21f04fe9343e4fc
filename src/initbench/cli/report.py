"""Tables and figures from finished runs: results.csv, summary.md, PNGs and index.html.

Usage (``initbench-report`` is the same command):
    python scripts/report.py outputs/local-sweeps/circles          # a local folder of runs
    python scripts/report.py outputs/ --out reports/all            # any folder, searched deeply
    python scripts/report.py my-team/initbench/abc123xy            # a W&B sweep (public API)
    python scripts/report.py outputs/local-sweeps/grid --wandb     # also log the figures to W&B
    python scripts/report.py --wandb-report my-team/initbench/abc123xy  # + a W&B Report page

Writes into --out (default: <folder>/report, or outputs/reports/<sweep id> for W&B); open
index.html in a browser. What could not be used (unfinished runs, missing metrics, ...) is
listed at the top of summary.md and index.html.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from initbench.io import safe_name
from initbench.report import (
    ReportError,
    build_report,
    load_source,
    save_wandb_report,
    wandb_report,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Docs: docs/reports.md."
    )
    parser.add_argument(
        "source",
        nargs="?",
        help="a folder of runs, or entity/project/sweep_id on W&B (default: --wandb-report's)",
    )
    parser.add_argument("--out", help="output folder (default: <folder>/report)")
    parser.add_argument(
        "--target-acc",
        type=float,
        help="accuracy for 'epochs to target' (default: 0.9 x the architecture's best)",
    )
    parser.add_argument(
        "--layer", help="layer for the weight histograms, e.g. fc2 (default: the middle one)"
    )
    parser.add_argument(
        "--hist-schemes", type=int, default=4, help="schemes per weight-histogram figure (4)"
    )
    parser.add_argument("--wandb", action="store_true", help="also log the figures to W&B")
    parser.add_argument(
        "--wandb-report",
        metavar="ENTITY/PROJECT/SWEEP",
        help="also build and save a W&B Report page for this sweep (needs wandb-workspaces "
        "and a W&B login): leaderboard, curves by init, parallel coordinates, histograms, "
        "step-0 figures",
    )
    args = parser.parse_args(argv)
    if args.source is None and args.wandb_report is None:
        parser.error("give a source (a folder or entity/project/sweep_id) or --wandb-report")
    args.source = args.source or args.wandb_report
    logging.basicConfig(level=logging.WARNING, format="report: %(message)s")
    try:
        if args.wandb_report:  # a bad path or a missing package: said before any work
            wandb_report(args.wandb_report)
        runset = load_source(args.source)
        if args.out:
            out = Path(args.out)
        elif Path(args.source).is_dir():
            out = Path(args.source) / "report"
        else:
            out = Path("outputs") / "reports" / safe_name(args.source.rstrip("/").split("/")[-1])
        files = build_report(
            runset,
            out,
            target_acc=args.target_acc,
            layer=args.layer,
            hist_schemes=args.hist_schemes,
            wandb=args.wandb,
            echo=lambda line: print(line, flush=True),
        )
        if args.wandb_report:
            page = wandb_report(args.wandb_report, runset, layer=args.layer)
            print(f"W&B report: {save_wandb_report(page)}", flush=True)
    except ReportError as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    for note in files.notes:
        print(f"left out: {note}")
    print(f"open {files.index_html}")
    return 0
