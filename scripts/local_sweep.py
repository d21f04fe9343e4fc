"""Run a W&B sweep file with no W&B server: every combination, here, W&B offline.

Usage:
    python scripts/local_sweep.py sweeps/circles.yaml --dry-run       # list the combinations
    python scripts/local_sweep.py sweeps/circles.yaml --parallel 2    # run them, 2 at a time
    python scripts/local_sweep.py sweeps/circles.yaml --parallel 2    # again: skips what is done
    python scripts/local_sweep.py sweeps/grid.yaml --check --dry-run  # compose every combination
    python scripts/local_sweep.py my_random.yaml --count 20 --seed 0  # method: random

Each combination runs the file's command (as a W&B agent would) in its own folder,
<out>/<combination name>; a re-run skips combinations whose summary.json says finished or
diverged and resumes interrupted ones. Then: python scripts/report.py <out>.
"""

import sys

from initbench.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
