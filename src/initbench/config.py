"""Hydra/OmegaConf glue shared by the entry points (train.py, diagnose.py) and the tests."""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


def wandb_run_dir(default: str) -> str:
    """The run directory: under a W&B sweep agent, one fixed folder per W&B run id.

    A preempted sweep run is requeued with the same run id; a fixed folder lets the restarted
    process find its checkpoint and resume. Elsewhere, ``default`` (time-stamped).
    """
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if sweep and run:
        return f"outputs/wandb-sweeps/{sweep}/{run}"
    return default


def choice(group: str, default: str) -> str:
    """The option picked for config group ``group`` in this Hydra run (``init=normal_std10`` ->
    ``normal_std10``), so run names tell apart two variants of one scheme; ``default`` where no
    Hydra app runs (the compose API: tests, sweep checks, notebooks), which has no choices."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get(group) or default
    return default


def register_resolvers() -> None:
    """Make the project's resolvers available to configs (idempotent)."""
    for name, resolver in (("wandb_run_dir", wandb_run_dir), ("choice", choice)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
