"""Tables and figures from finished runs: results.csv, summary.md, PNGs and index.html.

Usage and options: ``python scripts/report.py --help``, or the docstring
of initbench/cli/report.py (the same command as ``initbench-report``).
"""

import sys

from initbench.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
