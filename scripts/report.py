"""Tables and figures from finished runs: results.csv, summary.md, PNGs and index.html.

Usage:
    python scripts/report.py outputs/local-sweeps/circles          # a local folder of runs
    python scripts/report.py outputs/ --out reports/all            # any folder, searched deeply
    python scripts/report.py my-team/initbench/abc123xy            # a W&B sweep (public API)
    python scripts/report.py outputs/local-sweeps/grid --wandb     # also log the figures to W&B

Writes into --out (default: <folder>/report, or outputs/reports/<sweep id> for W&B); open
index.html in a browser. What could not be used (unfinished runs, missing metrics, ...) is
listed at the top of summary.md and index.html.
"""

import sys

from initbench.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
