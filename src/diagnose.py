"""The step-0 signal-propagation report alone: one forward and one backward pass, no training.

Usage (the same overrides as train.py, plus diagnose.batch_size / samples / dtype):
    python src/diagnose.py dataset=gaussian model.depth=100 model.width=512 model.bias=false \
        activation=tanh init=xavier_uniform
    python src/diagnose.py dataset=gaussian model.depth=8 model.width=10 init=normal init.std=1e-3 \
        diagnose.dtype=float64 diagnose.samples=20
    python src/diagnose.py --help

Prints a per-layer table and writes diagnose.json and diagnose.png (activation and gradient
std against depth) into the run directory (outputs/diagnose/<date>/<time>-<run name>/).
"""

from initbench.cli.diagnose import main

if __name__ == "__main__":
    main()
