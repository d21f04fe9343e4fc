"""A run directory's checkpoint: atomic save and load, RNG state, and whether a config may resume.

``checkpoint.pt`` holds the full training state (model, optimizer, :class:`TrainState`, every
RNG state, the W&B run id, the wall time so far). It is written through a temp file, fsync and
rename, keeping the one before as ``checkpoint.prev.pt``, so a ``kill -9`` at any moment leaves
one that loads.
"""

from __future__ import annotations

import logging
import pickle
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from initbench.errors import UserError
from initbench.io import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
# Config keys that may change between a run and its resumption: where it runs, how long, and
# what is observed, none of which changes the results.
RESUMABLE_CHANGES = ("trainer.device", "trainer.num_threads", "trainer.epochs", "data_dir",
                     "logger", "resume", "telemetry", "diagnose",
                     "trainer.memory_limit_gb")  # fmt: skip


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Save atomically (temp file, flush, fsync, rename); the previous one is kept as a fallback.
    A failed write (a full disk) removes its partial file and raises the OSError behind it."""
    previous = run_dir / PREVIOUS_CHECKPOINT
    with atomic_write(run_dir / CHECKPOINT, "wb", keep_previous=previous) as f:
        torch.save(state, f)


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint in ``run_dir`` that loads, or None when there is none.

    Loaded with ``weights_only=True``: tensors and plain data only, so a crafted file can never
    run code; a file holding anything else is refused by name. A truncated, corrupt or refused
    file is reported and skipped for the previous one; if every checkpoint present is unusable,
    UserError says so (rather than silently starting over).
    """
    present = [run_dir / n for n in (CHECKPOINT, PREVIOUS_CHECKPOINT) if (run_dir / n).exists()]
    problems = []
    for path in present:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(ckpt, dict) or not {"model", "optimizer", "train_state"} <= set(ckpt):
                raise ValueError("missing model/optimizer/train_state entries")
        except pickle.UnpicklingError:
            reason = (
                "refused: it holds objects other than tensors and plain data (a file from "
                "another program or version, or a crafted one); nothing in it was run"
            )
            problems.append(f"{path.name}: {reason}")
            log.warning("checkpoint %s %s; trying the previous one", path, reason)
            continue
        except Exception as err:  # truncated zip, wrong content: unusable
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


def load_previous_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint before the newest (``checkpoint.prev.pt``), or None when there is none
    or it does not load: a pack rolls a member back to it to resume with the others
    (initbench.run_pack)."""
    try:
        ckpt = torch.load(run_dir / PREVIOUS_CHECKPOINT, map_location="cpu", weights_only=True)
    except Exception:  # absent, truncated, refused: there is nothing to roll back to
        return None
    return ckpt if isinstance(ckpt, dict) and "train_state" in ckpt else None


def rng_state(device: torch.device, data_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from (python, numpy, torch, CUDA, the data order), for a checkpoint:
    tensors and plain lists only, so the checkpoint loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "data_generator": data_generator.get_state(),
        "python_rng": random.getstate(),
        "numpy_rng": [name, keys.tolist(), pos, has_gauss, cached],
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
    }


def restore_rng(ckpt: Mapping[str, Any], device: torch.device, data_generator: torch.Generator):
    """Put back the RNG states :func:`rng_state` saved."""
    data_generator.set_state(ckpt["data_generator"])
    random.setstate(ckpt["python_rng"])
    name, keys, pos, has_gauss, cached = ckpt["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng"):
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])


def _flatten(cfg: Mapping[str, Any], leaves: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> values; a node named in ``leaves`` stays whole."""
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in leaves:
            flat.update(_flatten(value, leaves, name + "."))
        else:
            flat[name] = value
    return flat


# Fields added to the config after runs were saved, with the value that means what those runs
# did: a checkpoint without them resumes as if they held it.
ADDED_FIELDS = {"trainer.holdout": 0}


def config_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], allowed: Sequence[str] = RESUMABLE_CHANGES
) -> list[str]:
    """Differences between two configs other than in the keys (or whole nodes) ``allowed``:
    by default those that make a checkpoint unusable (anything but RESUMABLE_CHANGES)."""
    a, b = _flatten(old, allowed), _flatten(new, allowed)
    for key, default in ADDED_FIELDS.items():  # a config from before the field existed
        a.setdefault(key, default)
        b.setdefault(key, default)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in allowed and a.get(k) != b.get(k)
    ]
