"""``initbench-train`` / ``python src/train.py``: train one benchmark run (conf/train.yaml).

Hydra composes the config; :func:`initbench.run.run` gets plain values. A bad value is one
line on stderr and exit code 2; a SIGTERM/SIGINT stop exits 128 + the signal number after
saving, so a W&B agent or SLURM requeues the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from initbench.cli.common import fail, hydra_app
from initbench.errors import Interrupted, RunFailed, UserError
from initbench.run import run


def _train(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        run(
            OmegaConf.to_container(cfg, resolve=True),
            run_dir=Path(hydra_cfg.runtime.output_dir),
            make_optimizer=instantiate(cfg.optimizer),
            choices=dict(hydra_cfg.runtime.choices),
        )
    except UserError as err:
        fail(err)
    except RunFailed as err:  # recorded in summary.json; exit 1 (a W&B agent does not requeue)
        print(f"initbench: error: {err}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as stop:  # SIGTERM/SIGINT: saved; non-zero so a W&B agent requeues it
        print(f"initbench: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)


def main() -> None:
    """Train one benchmark run; ``--help`` lists groups and fields."""
    hydra_app(_train, "train")()
