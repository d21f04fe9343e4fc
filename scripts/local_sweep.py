"""Run a W&B sweep file with no W&B server: every combination, here, W&B offline.

Usage and options: ``python scripts/local_sweep.py --help``, or the docstring
of initbench/cli/sweep.py (the same command as ``initbench-sweep``).
"""

import sys

from initbench.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
