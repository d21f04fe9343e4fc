"""The benchmark harness: speed and overhead figures as ratios measured side by side in one process.

Usage (``initbench-bench`` is the same command):
    python scripts/bench.py                      # full measurement on cuda if present, else cpu
    python scripts/bench.py --device cpu         # force the device
    python scripts/bench.py --quick              # a few seconds; checks it runs (tests)
    python scripts/bench.py --only telemetry_overhead   # some measurements only

Measurements (keys of bench.json): mlp_epoch_speedup_vs_dataloader (the FashionMNIST MLP's
epoch in a torchvision DataLoader loop over ours; needs the FashionMNIST files),
telemetry_overhead (telemetry at its interval over off, on the workload: the default run's MLP
on Gaussian inputs of FashionMNIST's size, or train.py overrides given here),
cnn30_speedup_fast_path (eager fp32 over the fast path, CIFAR-10-shaped batches),
threads_under_load (CPU: the default thread rule against 1..N threads and torch's default,
quiet and beside a busy process), and
grid_wall_time_estimate (sweeps/grid.yaml on this device), with ``meta`` (device, torch,
threads). Prints a table and writes --out.
"""

from __future__ import annotations

import argparse
import sys

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from initbench.bench import MEASUREMENTS, format_results, run_bench
from initbench.config import CONF_DIR, register_resolvers
from initbench.errors import UserError

WORKLOAD = ["dataset=gaussian", "dataset.dim=784", "dataset.n=2048", "logger=[]"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="train.py overrides for the workload")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda if available, else cpu")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a fast smoke run, for tests")
    parser.add_argument("--only", nargs="*", choices=sorted(MEASUREMENTS), help="measurements")
    parser.add_argument("--out", default="outputs/bench/bench.json", help="where to write JSON")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = [*WORKLOAD, f"trainer.device={device}", *args.overrides]
    if args.threads:
        overrides.append(f"trainer.num_threads={args.threads}")
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
    try:
        results = run_bench(cfg, instantiate(cfg["optimizer"]), quick=args.quick,
                            names=args.only, out=args.out)  # fmt: skip
    except UserError as err:
        print(f"initbench: error: {err}", file=sys.stderr)
        return 2
    print(format_results(results))
    print(f"wrote {args.out}")
    return 0
