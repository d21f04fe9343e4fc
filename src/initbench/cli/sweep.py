"""Run a W&B sweep file with no W&B server: every combination, here, W&B offline.

Usage (``initbench-sweep`` is the same command):
    python scripts/local_sweep.py sweeps/circles.yaml --dry-run       # list; missing data; time
    python scripts/local_sweep.py sweeps/circles.yaml --parallel 2    # run them, 2 at a time
    python scripts/local_sweep.py sweeps/circles.yaml --parallel 2    # again: skips what is done
    python scripts/local_sweep.py sweeps/grid.yaml --check --dry-run  # compose every combination
    python scripts/local_sweep.py my_random.yaml --count 20 --seed 0  # method: random
    python scripts/local_sweep.py sweeps/grid.yaml --pack             # init x seed packed

Each combination runs the file's command (as a W&B agent would) in its own folder,
<out>/<combination name>; a re-run skips combinations whose summary.json says finished or
diverged and resumes interrupted ones. Then: python scripts/report.py <out>.
"""

from __future__ import annotations

import argparse
import os
import sys

from initbench.sweep import SweepError, local_sweep


def echo(line: str) -> None:
    """Print and flush; if the reader went away (| head), keep working without printing."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Docs: docs/sweeps.md."
    )
    parser.add_argument("sweep", help="a W&B sweep file, e.g. sweeps/grid.yaml")
    parser.add_argument(
        "--out", help="folder for the runs (default: outputs/local-sweeps/<sweep name>)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list the combinations, run none")
    parser.add_argument(
        "--check", action="store_true", help="compose every combination's config first"
    )
    parser.add_argument("--parallel", type=int, default=1, help="processes at a time (default 1)")
    parser.add_argument(
        "--pack",
        type=int,
        nargs="?",
        const=0,
        metavar="K",
        help="train the combinations that differ only in init and seed together, as packs of "
        "at most K members (default: as many as fit in memory); see src/pack.py",
    )
    parser.add_argument(
        "--count", type=int, help="random: number of draws (default: run_cap); grid: at most N"
    )
    parser.add_argument("--seed", type=int, default=0, help="random: seed of the draws (default 0)")
    parser.add_argument(
        "--wandb-mode",
        default="offline",
        choices=["offline", "disabled", "online"],
        help="WANDB_MODE for the runs (default offline; upload later with wandb sync)",
    )
    parser.add_argument(
        "--bench",
        default="outputs/bench/bench.json",
        help="--dry-run: the scripts/bench.py results the wall-time estimate uses "
        "(default outputs/bench/bench.json)",
    )
    args = parser.parse_args(argv)
    try:
        return local_sweep(
            args.sweep,
            out=args.out,
            dry_run=args.dry_run,
            check=args.check,
            parallel=args.parallel,
            count=args.count,
            seed=args.seed,
            wandb_mode=args.wandb_mode,
            echo=echo,
            pack=args.pack,
            bench=args.bench,
        )
    except SweepError as err:
        print(f"local_sweep: error: {err}", file=sys.stderr)
        return 2
