"""Command-line entry points: compose the config with Hydra, call one tool, turn its errors
into one line and an exit code.

``python src/train.py`` and ``python src/diagnose.py`` (the documented usage) call
:func:`train` and :func:`diagnose`; pyproject installs them as console scripts too
(``initbench-train``, ``initbench-diagnose``). Hydra reads ``conf/`` from the repository
(an editable install, as ``scripts/setup.sh`` makes) or from ``$INITBENCH_CONF_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from initbench.config import CONF_DIR, ENTRY_CONFIGS, register_resolvers
from initbench.diagnose import format_table, run_diagnose
from initbench.errors import Interrupted, UserError
from initbench.run import run


def fail(err: UserError) -> None:
    """Bad input: one line on stderr, exit code 2."""
    print(f"initbench: error: {err}", file=sys.stderr)
    sys.exit(2)


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
    except Interrupted as stop:  # SIGTERM/SIGINT: saved; non-zero so a W&B agent requeues it
        print(f"initbench: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)


def _diagnose(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = run_diagnose(OmegaConf.to_container(cfg, resolve=True), run_dir)
    except UserError as err:
        fail(err)
    print(format_table(report))
    print(f"wrote {run_dir / 'diagnose.json'} and {run_dir / 'diagnose.png'}")


def _hydra_main(task, config_name: str):
    register_resolvers()
    return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)


def train() -> None:
    """Train one benchmark run (conf/train.yaml); ``--help`` lists groups and fields."""
    _hydra_main(_train, ENTRY_CONFIGS["train"])()


def diagnose() -> None:
    """The step-0 signal-propagation report alone (conf/diagnose.yaml)."""
    _hydra_main(_diagnose, ENTRY_CONFIGS["diagnose"])()
