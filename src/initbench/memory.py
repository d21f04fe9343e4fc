"""How much memory a run needs, estimated from plain numbers before anything is allocated, and
how much the device has free.

The estimate is the run's peak, in float32 (an upper bound under bf16 autocast):

- the parameters, their gradients, and the optimizer's state (Adam: two more copies of the
  parameters; SGD with momentum: one; see :func:`optimizer_state_copies`);
- activations: the largest of one training batch's (every layer's output, kept for the
  backward pass), one evaluation batch's (about two layer outputs at a time: no autograd) and
  the step-0 report's batch (its outputs and their gradients);
- the dataset, held whole on the device.

It leaves out what is small next to these: the CUDA context, cuDNN workspaces, telemetry
snapshots. :func:`initbench.build.prepare` compares it with :func:`available_memory` (or the
``trainer.memory_limit_gb`` cap) before loading data or building the model.

Usage::

    size = model_size("mlp", input_shape=(1, 28, 28), num_classes=10, depth=100, width=4096)
    est = estimate_memory(size, dataset_shape("fashion_mnist"), optimizer_copies=2,
                          batch_size=128, eval_batch_size=1024)
    print(est.describe(), est.total > available_memory(torch.device("cpu")))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from initbench.data import DataShape
from initbench.models import ModelSize

FLOAT32 = 4  # bytes per value
GB = 10**9
BATCH_NAMES = {"train": "a training batch", "eval": "an evaluation batch",
               "report": "the step-0 report's batch"}  # fmt: skip


def gb(n_bytes: float) -> str:
    """``412.3 GB``; small and huge amounts keep two significant digits (``0.0021 GB``,
    ``1.6e+14 GB``)."""
    value = n_bytes / GB
    return f"{value:.1f} GB" if 0.1 <= value < 1e5 else f"{value:.2g} GB"


def optimizer_state_copies(optimizer: Mapping[str, Any]) -> int:
    """Copies of the parameters a ``torch.optim`` optimizer keeps as state, from its config
    (``_target_`` and its arguments): Adam/AdamW 2 (3 with amsgrad), SGD 1 with momentum and
    0 without, RMSprop 1 (+1 momentum, +1 centered), Adagrad 1; any other is assumed to keep 2.
    """
    name = str(optimizer.get("_target_", "")).rsplit(".", 1)[-1]
    if name == "SGD":
        return 1 if optimizer.get("momentum") else 0
    if name in ("Adam", "AdamW"):
        return 3 if optimizer.get("amsgrad") else 2
    if name == "RMSprop":
        return 1 + bool(optimizer.get("momentum")) + bool(optimizer.get("centered"))
    if name == "Adagrad":
        return 1
    return 2


@dataclass(frozen=True)
class MemoryEstimate:
    """A run's estimated peak memory in bytes, by part."""

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    data: int
    batch: str  # the batch that sets the activations: train | eval | report (step 0)
    batch_size: int

    def packed(self, members: int, datasets: int = 1) -> MemoryEstimate:
        """The estimate for ``members`` such runs trained as one pack (initbench.packing):
        everything per member, but the data once per distinct dataset."""
        return MemoryEstimate(
            parameters=members * self.parameters,
            gradients=members * self.gradients,
            optimizer_state=members * self.optimizer_state,
            activations=members * self.activations,
            data=datasets * self.data,
            batch=self.batch,
            batch_size=self.batch_size,
        )

    @property
    def model(self) -> int:
        """Parameters, gradients and optimizer state: what only a smaller model reduces."""
        return self.parameters + self.gradients + self.optimizer_state

    @property
    def total(self) -> int:
        return self.model + self.activations + self.data

    def describe(self, optimizer: str = "optimizer") -> str:
        """``parameters 1.2 GB, gradients 1.2 GB, Adam state 2.4 GB, activations ...``."""
        return (
            f"parameters {gb(self.parameters)}, gradients {gb(self.gradients)}, "
            f"{optimizer} state {gb(self.optimizer_state)}, activations {gb(self.activations)} "
            f"({BATCH_NAMES[self.batch]} of {self.batch_size}), data {gb(self.data)}"
        )


def estimate_memory(
    size: ModelSize,
    data: DataShape,
    *,
    optimizer_copies: int,
    batch_size: int,
    eval_batch_size: int,
    report_batch: int | None = None,
    report_value_bytes: int = FLOAT32,
) -> MemoryEstimate:
    """The peak memory of training a model of ``size`` on ``data`` (see the module docstring).

    Args:
        size: from :func:`initbench.models.model_size`.
        data: from :func:`initbench.data.dataset_shape`.
        optimizer_copies: :func:`optimizer_state_copies`.
        batch_size, eval_batch_size: the training and evaluation batch sizes.
        report_batch: the step-0 report's batch size (None: no report).
        report_value_bytes: bytes per value in the report (8 with ``diagnose.dtype=float64``).
    """
    params = size.params * FLOAT32
    train, test = min(batch_size, data.n_train), min(eval_batch_size, data.n_test)
    batches = [
        (train * size.activations * FLOAT32, "train", train),
        (test * 2 * size.widest * FLOAT32, "eval", test),
    ]
    if report_batch is not None:
        n = min(report_batch, data.n_train)
        batches.append((n * 2 * size.activations * report_value_bytes, "report", n))
    activations, batch, n = max(batches)
    return MemoryEstimate(
        parameters=params,
        gradients=params,
        optimizer_state=optimizer_copies * params,
        activations=activations,
        data=data.nbytes,
        batch=batch,
        batch_size=n,
    )


def meminfo_available(path: str | Path = "/proc/meminfo") -> int | None:
    """The kernel's estimate of the memory available to a new process (``MemAvailable``), in
    bytes; None where there is no ``/proc/meminfo`` (macOS). It does not see a cgroup's limit."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB, meaning KiB
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device``: CUDA's free memory, or the CPU's available RAM; None where it
    cannot be told (MPS, a system without ``/proc/meminfo``)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return meminfo_available()
    return None
