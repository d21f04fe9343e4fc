"""The benchmark harness (bench.json): ratios measured side by side in one process.

Usage and options: ``python scripts/bench.py --help``, or the docstring
of initbench/cli/bench.py (the same command as ``initbench-bench``).
"""

import sys

from initbench.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
