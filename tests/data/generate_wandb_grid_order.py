"""Write tests/data/wandb_grid_order.json: the first runs W&B's own grid engine hands out for
each grid sweep file (tests/test_sweeps.py pins local_sweep's order to it).

W&B's ``sweeps`` package pins numpy < 2, so it runs in a virtual environment of its own, never
in the project's install; from the repository root:

    python3 -m venv /tmp/sweeps-venv && /tmp/sweeps-venv/bin/pip install sweeps pyyaml
    /tmp/sweeps-venv/bin/python tests/data/generate_wandb_grid_order.py
"""

import glob
import importlib.metadata
import json
import os

import yaml
from sweeps.grid_search import grid_search_next_runs

N = 12  # runs per file

out = {
    "generator": f"sweeps.grid_search.grid_search_next_runs(runs=[], config, n={N})",
    "sweeps_version": importlib.metadata.version("sweeps"),
    "files": {},
}
for path in sorted(glob.glob("sweeps/*.yaml")):
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if cfg.get("method") != "grid":
        continue
    rows = []
    for run in grid_search_next_runs([], cfg, n=N):
        if run is None:  # the grid has fewer than N points
            break
        rows.append({key: value["value"] for key, value in run.config.items()})
    out["files"][os.path.basename(path)] = rows
with open("tests/data/wandb_grid_order.json", "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
print({name: len(rows) for name, rows in out["files"].items()})
