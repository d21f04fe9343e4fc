"""Samples of every layer's weights at initialization and at the end of training.

A run keeps them in ``weights.npz`` in its run directory, so the report can draw weight
histograms from what the run wrote, without rebuilding the model or loading a checkpoint.

The file holds plain arrays (``np.savez``; read with ``allow_pickle=False``):

- ``init/<layer>``, ``final/<layer>``: float32 values of the layer's weight, flattened — all of
  them when the layer has at most :data:`SAMPLE_SIZE`, else :data:`SAMPLE_SIZE` values at the
  indices :func:`sample_indices` draws from the layer's name and size, so the same positions
  are sampled at both stages;
- ``numel/<layer>``: the layer's full size (an int64 scalar).

A layer is every ``<layer>.weight`` parameter with two or more dimensions (Linear and conv
weights; not norm layers), named without ``.weight``: ``fc1``, ``conv17``, ``head``.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from initbench.io import atomic_write

log = logging.getLogger(__name__)

SAMPLE_SIZE = 4096  # values kept per layer and stage
WEIGHTS_FILE = "weights.npz"
STAGES = ("init", "final")


class WeightSample(NamedTuple):
    """One layer's sampled weight values and how many values the layer has."""

    values: np.ndarray  # float32, flattened: all values, or SAMPLE_SIZE of them
    numel: int  # the layer's full size


def sample_indices(name: str, numel: int, size: int = SAMPLE_SIZE) -> np.ndarray | None:
    """The sorted flat indices sampled from layer ``name`` (None: all ``numel`` values).

    Drawn without replacement from a generator seeded by the name and the size, so they are
    the same at initialization and at the end of a run, and across runs of one architecture.
    """
    if numel <= size:
        return None
    rng = np.random.default_rng([zlib.crc32(name.encode()), numel])
    return np.sort(rng.choice(numel, size=size, replace=False))


def weight_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer: weight}`` for every weight with two or more dimensions, in module order."""
    return {
        name.removesuffix(".weight"): p
        for name, p in model.named_parameters()
        if name.endswith(".weight") and p.ndim >= 2
    }


@torch.no_grad()
def sample_weights(model: nn.Module, size: int = SAMPLE_SIZE) -> dict[str, WeightSample]:
    """``{layer: WeightSample}``: each layer's weight values at :func:`sample_indices`."""
    samples = {}
    for name, weight in weight_layers(model).items():
        flat = weight.detach().reshape(-1)  # logical order, whatever the memory format
        idx = sample_indices(name, flat.numel(), size)
        if idx is not None:
            flat = flat[torch.from_numpy(idx).to(flat.device)]
        samples[name] = WeightSample(flat.float().cpu().numpy(), weight.numel())
    return samples


def write_weight_samples(run_dir: str | Path, stage: str, samples: dict[str, WeightSample]) -> Path:
    """Store ``samples`` as ``stage`` in ``run_dir/weights.npz`` (atomically: temp file, fsync,
    rename). ``init`` starts the file afresh (a fresh start makes older samples stale); a later
    stage replaces its own arrays and keeps the others."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)} (got {stage!r})")
    path = Path(run_dir) / WEIGHTS_FILE
    arrays: dict[str, np.ndarray] = {}
    if stage != STAGES[0]:
        try:
            arrays = {k: v for k, v in _load(path).items() if not k.startswith(f"{stage}/")}
        except FileNotFoundError:
            pass
        except ValueError as err:  # never fail a finished run over its samples
            log.warning("%s; writing the %s samples alone", err, stage)
    for name, sample in samples.items():
        arrays[f"{stage}/{name}"] = np.asarray(sample.values, dtype=np.float32)
        arrays[f"numel/{name}"] = np.asarray(sample.numel, dtype=np.int64)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def record_weights(run_dir: str | Path, stage: str, model: nn.Module) -> Path:
    """Sample ``model``'s weights and store them as ``stage`` (``init`` or ``final``)."""
    return write_weight_samples(run_dir, stage, sample_weights(model))


def read_weight_samples(run_dir: str | Path) -> dict[str, dict[str, WeightSample]]:
    """``{stage: {layer: WeightSample}}`` from ``run_dir/weights.npz``, layers in module order.

    Raises:
        FileNotFoundError: the run wrote no weights.npz.
        ValueError: the file is not a readable weights file.
    """
    arrays = _load(Path(run_dir) / WEIGHTS_FILE)
    out: dict[str, dict[str, WeightSample]] = {}
    for key, values in arrays.items():
        stage, _, name = key.partition("/")
        if stage in STAGES:
            numel = arrays.get(f"numel/{name}", np.asarray(values.size))
            out.setdefault(stage, {})[name] = WeightSample(values, int(numel))
    return out


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated zip, not an npz, object arrays
        raise ValueError(f"{path.name} unreadable ({type(err).__name__}: {err})") from None
