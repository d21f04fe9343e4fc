"""Train one benchmark run: model x dataset x initializer x activation.

Usage:
    python src/train.py                                         # FashionMNIST MLP, defaults
    python src/train.py init=kaiming_normal model=cnn30 dataset=cifar10 activation=relu
    python src/train.py -m init=xavier_uniform,kaiming_normal activation=relu,tanh
    python src/train.py --help                                  # groups, options, fields

Hydra composes conf/train.yaml; this file hands the resolved values to initbench.runner.
The run directory (printed at the end) holds config.yaml, checkpoint.pt, metrics.jsonl,
summary.json and the TensorBoard events; W&B writes under it too.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from initbench.config import register_resolvers
from initbench.runner import Interrupted, UserError, run

register_resolvers()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        make_optimizer = instantiate(cfg.optimizer)
        run(
            OmegaConf.to_container(cfg, resolve=True),
            run_dir=Path(hydra_cfg.runtime.output_dir),
            make_optimizer=make_optimizer,
            choices=dict(hydra_cfg.runtime.choices),
        )
    except UserError as err:
        print(f"initbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as stop:  # SIGTERM/SIGINT: saved; non-zero so a W&B agent requeues it
        print(f"initbench: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    main()
