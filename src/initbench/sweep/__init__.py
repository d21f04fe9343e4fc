"""Sweep files and a local sweep runner that needs no W&B server.

A sweep file (``sweeps/*.yaml``) is a W&B sweep configuration: ``wandb sweep FILE`` registers
it and ``wandb agent`` processes run its combinations. This package reads the same file and runs
it here, with the same semantics:

- :mod:`~initbench.sweep.spec`: read and check the file (``load_sweep``);
- :mod:`~initbench.sweep.combinations`: its points, grid or random, as W&B's engine orders
  and draws them (``combinations``);
- :mod:`~initbench.sweep.commands`: the process a W&B agent would start for a point
  (``build_command``), and the config it composes to (``compose_combinations``);
- :mod:`~initbench.sweep.local`: run the points here, resumably (``run_local_sweep``,
  ``local_sweep`` for ``scripts/local_sweep.py``).

The W&B engine itself (the ``sweeps`` package) is not used: its dependency pins (numpy < 2,
scipy, scikit-learn) do not fit this project, and grid and random are a few lines each.
``bayes`` needs the W&B server's history and is refused here.

Usage::

    sweep = load_sweep("sweeps/circles.yaml")
    combos = combinations(sweep)
    outcomes = run_local_sweep(sweep, combos, "outputs/local-sweeps/circles", parallel=2)
    print(results_table(sweep, outcomes))
"""

from initbench.sweep.combinations import (
    Combination,
    combination_name,
    combinations,
    grid_combinations,
    random_combinations,
    varying_keys,
)
from initbench.sweep.commands import (
    build_command,
    compose_by,
    compose_combinations,
    program_config,
)
from initbench.sweep.local import (
    Outcome,
    default_out_dir,
    local_sweep,
    read_outcome,
    results_table,
    run_local_sweep,
)
from initbench.sweep.spec import Param, Sweep, SweepError, load_sweep

__all__ = [
    "Combination",
    "Outcome",
    "Param",
    "Sweep",
    "SweepError",
    "build_command",
    "combination_name",
    "combinations",
    "compose_by",
    "compose_combinations",
    "default_out_dir",
    "grid_combinations",
    "load_sweep",
    "local_sweep",
    "program_config",
    "random_combinations",
    "read_outcome",
    "results_table",
    "run_local_sweep",
    "varying_keys",
]
