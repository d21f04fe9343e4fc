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

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from initbench.config import register_resolvers
from initbench.diagnose import format_table, run_diagnose
from initbench.runner import UserError

register_resolvers()


@hydra.main(config_path="../conf", config_name="diagnose", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = run_diagnose(OmegaConf.to_container(cfg, resolve=True), run_dir)
    except UserError as err:
        print(f"initbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_table(report))
    print(f"wrote {run_dir / 'diagnose.json'} and {run_dir / 'diagnose.png'}")


if __name__ == "__main__":
    main()
