"""The training loop: plain objects in, a result dict out (no Hydra in here).

Metrics are accumulated on the device and read back once per epoch, so the step itself
never waits for the host.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from initbench.data import DeviceDataset
from initbench.telemetry import Sink

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced; ``status`` is "finished" or "diverged"."""

    status: str = "finished"
    epochs_completed: int = 0
    global_step: int = 0
    final: dict[str, float] = field(default_factory=dict)
    best_val_acc: float | None = None
    diverged_at_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CUDA; plain fp32 elsewhere."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DeviceDataset, batch_size: int, precision: str = "fp32"
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the test split."""
    model.eval()
    device = data.test_x.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for x, y in data.batches("test", batch_size):
        with autocast_context(device, precision):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    n = len(data.test_y)
    return float(loss_sum) / n, int(correct) / n


def train(
    model: nn.Module,
    data: DeviceDataset,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    eval_batch_size: int = 1024,
    precision: str = "fp32",
    generator: torch.Generator | None = None,
    sink: Sink | None = None,
    on_epoch_end: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` for ``epochs`` epochs, evaluating on the test split each epoch.

    Args:
        model: the network, already initialized and on the data's device.
        data: a device-resident dataset.
        optimizer: an optimizer over ``model``'s parameters.
        epochs: passes over the training split.
        batch_size: training minibatch size.
        eval_batch_size: evaluation batch size.
        precision: "fp32" or "bf16" (autocast on CUDA only).
        generator: CPU generator for the data order (and augmentation).
        sink: where ``train/*`` and ``val/*`` scalars go, once per epoch.
        on_epoch_end: called with (epoch, global_step) after each epoch (checkpointing).

    A non-finite training loss stops the run with status "diverged"; that is a result,
    not an error.
    """
    device = data.train_x.device
    result = TrainResult()
    n_train = len(data.train_y)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        for x, y in data.batches("train", batch_size, generator):
            with autocast_context(device, precision):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.global_step += 1
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        train_loss = float(loss_sum) / n_train
        train_acc = int(correct) / n_train
        if not math.isfinite(train_loss):
            result.status = "diverged"
            result.diverged_at_epoch = epoch
            log.warning("epoch %d: training loss is %s: the run diverged", epoch, train_loss)
            break
        val_loss, val_acc = evaluate(model, data, eval_batch_size, precision)
        metrics = {
            "train/loss": train_loss,
            "train/acc": train_acc,
            "val/loss": val_loss,
            "val/acc": val_acc,
            "epoch": epoch,
        }
        if sink is not None:
            sink.log_scalars(metrics, step=result.global_step)
        result.history.append({**metrics, "step": result.global_step})
        result.final = {k.replace("/", "_"): v for k, v in metrics.items() if k != "epoch"}
        result.epochs_completed = epoch
        if math.isfinite(val_acc) and (
            result.best_val_acc is None or val_acc > result.best_val_acc
        ):
            result.best_val_acc = val_acc
        log.info(
            "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  (%.1f s)",
            epoch,
            epochs,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            time.perf_counter() - start,
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, result.global_step)
    return result
