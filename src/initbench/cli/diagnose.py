"""``initbench-diagnose`` / ``python src/diagnose.py``: the step-0 signal-propagation report
alone (conf/diagnose.yaml): a per-layer table on stdout, diagnose.json and diagnose.png in the
run directory."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from initbench.cli.common import fail, hydra_app
from initbench.diagnose import format_table, run_diagnose
from initbench.errors import UserError


def _diagnose(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        report = run_diagnose(OmegaConf.to_container(cfg, resolve=True), run_dir)
    except UserError as err:
        fail(err)
    print(format_table(report))
    print(f"wrote {run_dir / 'diagnose.json'} and {run_dir / 'diagnose.png'}")


def main() -> None:
    """The step-0 report alone; ``--help`` lists groups and fields."""
    hydra_app(_diagnose, "diagnose")()
