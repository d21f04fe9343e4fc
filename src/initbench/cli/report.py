"""Tables and figures from finished runs: results.csv, summary.md, PNGs and index.html.

Usage (``initbench-report`` is the same command):
    python scripts/report.py outputs/local-sweeps/circles          # a local folder of runs
    python scripts/report.py outputs/ --out reports/all            # any folder, searched deeply
    python scripts/report.py my-team/initbench/abc123xy            # a W&B sweep (public API)
    python scripts/report.py outputs/local-sweeps/grid --wandb     # also log the figures to W&B

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
from initbench.report import ReportError, build_report, load_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Docs: README.md (Reports)."
    )
    parser.add_argument("source", help="a folder of runs, or entity/project/sweep_id on W&B")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="report: %(message)s")
    try:
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
    except ReportError as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    for note in files.notes:
        print(f"left out: {note}")
    print(f"open {files.index_html}")
    return 0
