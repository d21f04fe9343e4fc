"""A run directory's checkpoint: atomic save and load, RNG state, and whether a config may resume.

``checkpoint.pt`` holds the full training state (model, optimizer, :class:`TrainState`, every
RNG state, the W&B run id, the wall time so far). It is written through a temp file, fsync and
rename, keeping the one before as ``checkpoint.prev.pt``, so a ``kill -9`` at any moment leaves
one that loads.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from initbench.errors import UserError
from initbench.io import fsync_replace

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
# Config keys that may change between a run and its resumption: where it runs, how long, and
# what is observed, none of which changes the results.
RESUMABLE_CHANGES = ("trainer.device", "trainer.num_threads", "trainer.epochs", "data_dir",
                     "logger", "resume", "telemetry", "diagnose",
                     "trainer.memory_limit_gb")  # fmt: skip


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Save atomically (temp file, flush, fsync, rename); the previous one is kept as a fallback."""
    tmp = run_dir / (CHECKPOINT + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    current = run_dir / CHECKPOINT
    if current.exists():
        os.replace(current, run_dir / PREVIOUS_CHECKPOINT)
    fsync_replace(tmp, current)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint in ``run_dir`` that loads, or None when there is none.

    A truncated or corrupt file is reported and skipped for the previous one; if every
    checkpoint present is unreadable, UserError says so (rather than silently starting over).
    """
    present = [run_dir / n for n in (CHECKPOINT, PREVIOUS_CHECKPOINT) if (run_dir / n).exists()]
    problems = []
    for path in present:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(ckpt, dict) or not {"model", "optimizer", "train_state"} <= set(ckpt):
                raise ValueError("missing model/optimizer/train_state entries")
        except Exception as err:  # truncated zip, bad pickle, wrong content: all unusable
            problems.append(f"{path.name}: {type(err).__name__}: {err}")
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, err)
            continue
        return ckpt
    if present:
        raise UserError(
            f"no usable checkpoint in {run_dir} ({'; '.join(problems)}); delete "
            f"{' and '.join(p.name for p in present)} to start this run over"
        )
    return None


def rng_state(device: torch.device, data_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from (python, numpy, torch, CUDA, the data order), for a checkpoint."""
    return {
        "data_generator": data_generator.get_state(),
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
    }


def restore_rng(ckpt: Mapping[str, Any], device: torch.device, data_generator: torch.Generator):
    """Put back the RNG states :func:`rng_state` saved."""
    data_generator.set_state(ckpt["data_generator"])
    random.setstate(ckpt["python_rng"])
    np.random.set_state(ckpt["numpy_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng"):
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not any(name == k for k in RESUMABLE_CHANGES):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Differences that make a checkpoint unusable (anything but RESUMABLE_CHANGES)."""
    a, b = _flatten(old), _flatten(new)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k)
    ]
