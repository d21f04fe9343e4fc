"""The benchmark harness: speed and overhead figures as ratios measured side by side in one process.

Usage:
    python scripts/bench.py                      # full measurement on cuda if present, else cpu
    python scripts/bench.py --device cpu         # force the device
    python scripts/bench.py --quick              # a few seconds; checks it runs (tests)
    python scripts/bench.py --only telemetry_overhead   # some measurements only

Measurements (keys of bench.json): mlp_epoch_speedup_vs_dataloader (the FashionMNIST MLP's
epoch in a torchvision DataLoader loop over ours; needs the FashionMNIST files),
telemetry_overhead (telemetry at its interval over off, on the workload: the default run's MLP
on Gaussian inputs of FashionMNIST's size, or train.py overrides given here),
cnn30_speedup_fast_path (eager fp32 over the fast path, CIFAR-10-shaped batches), and
grid_wall_time_estimate (sweeps/grid.yaml on this device), with ``meta`` (device, torch,
threads). Prints a table and writes --out.
"""

import sys

from initbench.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
