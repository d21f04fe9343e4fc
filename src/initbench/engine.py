"""The training loop: plain objects in, a resumable state out (no Hydra in here).

Metrics are accumulated on the device and read back once per epoch; divergence is tracked on
the device and checked every ``DIVERGENCE_CHECK_EVERY`` steps, so the step itself never waits
for the host. Everything needed to continue exactly (counters, the epoch's data-order state,
the partial epoch's sums) lives in :class:`TrainState`, which the caller checkpoints.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from initbench.data import DeviceDataset
from initbench.progress import Progress
from initbench.telemetry import Sink

log = logging.getLogger(__name__)

DIVERGENCE_CHECK_EVERY = 50  # steps between host reads of the on-device divergence flag


class StepObserver(Protocol):
    """Watches the optimizer steps (telemetry); ``step`` is the global step being taken."""

    def before_step(self, step: int) -> None: ...

    def after_backward(self, step: int) -> None: ...

    def after_step(self, step: int) -> None: ...

    def is_snapshot(self, step: int) -> bool:
        """Whether ``step`` is observed (a packed run then feeds the member's own forward)."""
        ...


@dataclass
class TrainState:
    """Where training stands; enough to continue bit-for-bit after a restart."""

    status: str = "running"  # running | finished | diverged | interrupted
    epoch: int = 0  # completed epochs
    global_step: int = 0  # optimizer steps taken
    step_in_epoch: int = 0  # batches done in the current, unfinished epoch
    epoch_rng: torch.Tensor | None = None  # data-order generator state at the epoch's start
    partial_loss_sum: float = 0.0  # sums over the unfinished epoch's batches
    partial_correct: int = 0
    best_val_acc: float | None = None
    final: dict[str, float] = field(default_factory=dict)  # last all-finite epoch's metrics
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    diverged_at_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TrainState:
        return cls(**state)


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CUDA; plain fp32 elsewhere."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Image batches in channels_last layout when asked (faster convs on tensor cores)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DeviceDataset,
    batch_size: int,
    precision: str = "fp32",
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the test split."""
    model.eval()
    device = data.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for x, y in data.batches("test", batch_size):
        with autocast_context(device, precision):
            logits = model(to_memory_format(x, channels_last))
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
    generator: torch.Generator,
    eval_batch_size: int = 1024,
    precision: str = "fp32",
    channels_last: bool = False,
    state: TrainState | None = None,
    sink: Sink | None = None,
    observer: StepObserver | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainState:
    """Train ``model`` on ``data`` until ``epochs`` epochs are done, evaluating every epoch.

    Args:
        model: the network, already initialized and on the data's device.
        data: a device-resident dataset.
        optimizer: an optimizer over ``model``'s parameters.
        epochs: total passes over the training split (including those already in ``state``).
        batch_size: training minibatch size.
        generator: CPU generator for the data order and augmentation (its state is part of
            what a checkpoint must hold).
        eval_batch_size: evaluation batch size.
        precision: "fp32" or "bf16" (autocast on CUDA only).
        channels_last: feed image batches in channels_last layout (the model should be
            converted too).
        state: where to continue from (a restored checkpoint); a fresh start when None.
        sink: receives ``train/*`` and ``val/*`` scalars once per epoch.
        observer: called around every optimizer step (telemetry).
        on_epoch_end: called with the state after each completed epoch (checkpointing).
        should_stop: polled after every step; when it returns True the loop stops with
            status "interrupted" and a state that continues mid-epoch.

    Returns:
        The final state: "finished", "diverged" (a non-finite training loss; a result, not an
        error) or "interrupted". ``final`` holds the metrics of the last epoch whose metrics
        were all finite (empty if none was); ``history`` every epoch's, as measured.
    """
    state = state or TrainState()
    device = data.device
    n_train = len(data.train_y)
    first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)
    state.status = "running"
    for epoch in range(state.epoch + 1, epochs + 1):
        start = time.perf_counter()
        if state.step_in_epoch == 0:
            state.epoch_rng = generator.get_state()
        else:  # resume mid-epoch: replay this epoch's draws, skip the batches already done
            generator.set_state(state.epoch_rng)
        batches = itertools.islice(
            data.batches("train", batch_size, generator), state.step_in_epoch, None
        )
        loss_sum = torch.tensor(state.partial_loss_sum, device=device, dtype=torch.float64)
        correct = torch.tensor(state.partial_correct, device=device, dtype=torch.int64)
        model.train()
        progress = Progress(  # a bar on a terminal, else a line every ~10 s (progress.py)
            data.num_batches("train", batch_size), f"epoch {epoch}/{epochs}",
            initial=state.step_in_epoch, write=log.info,
        )  # fmt: skip
        for x, y in progress.wrap(batches):
            step = state.global_step
            if observer is not None:
                observer.before_step(step)
            with autocast_context(device, precision):
                logits = model(to_memory_format(x, channels_last))
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if observer is not None:
                observer.after_backward(step)
            optimizer.step()
            if observer is not None:
                observer.after_step(step)
            state.global_step += 1
            state.step_in_epoch += 1
            loss = loss.detach()
            first_bad_step = torch.where(
                (first_bad_step < 0) & ~torch.isfinite(loss), step, first_bad_step
            )
            loss_sum += loss * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if state.global_step % DIVERGENCE_CHECK_EVERY == 0 and _diverged(state, first_bad_step):
                return state
            if should_stop is not None and should_stop():
                if _diverged(state, first_bad_step):  # never checkpoint a diverged state
                    return state
                state.status = "interrupted"
                state.partial_loss_sum = float(loss_sum)
                state.partial_correct = int(correct)
                return state
        if _diverged(state, first_bad_step):
            return state
        train_loss = float(loss_sum) / n_train
        train_acc = int(correct) / n_train
        val_loss, val_acc = evaluate(model, data, eval_batch_size, precision, channels_last)
        metrics = {
            "train/loss": train_loss,
            "train/acc": train_acc,
            "val/loss": val_loss,
            "val/acc": val_acc,
            "epoch": epoch,
        }
        record_epoch(state, metrics, sink)
        log.info(
            "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  (%.1f s)",
            epoch, epochs, train_loss, train_acc, val_loss, val_acc, time.perf_counter() - start,
        )  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(state)
        if should_stop is not None and should_stop():
            if epoch < epochs:
                state.status = "interrupted"
                return state
    state.status = "finished"
    return state


def record_epoch(state: TrainState, metrics: dict[str, float], sink: Sink | None) -> None:
    """A completed epoch into ``state`` (history, final, best) and ``sink``; ready for the next."""
    if sink is not None:
        sink.log_scalars(metrics, step=state.global_step)
    state.history.append({**metrics, "step": state.global_step})
    if all(math.isfinite(v) for v in metrics.values()):  # else final keeps an earlier epoch
        state.final = {k.replace("/", "_"): v for k, v in metrics.items() if k != "epoch"}
    else:
        log.warning(
            "epoch %d: a metric is not finite; final keeps the last finite epoch", metrics["epoch"]
        )
    if state.best_val_acc is None or metrics["val/acc"] > state.best_val_acc:
        state.best_val_acc = metrics["val/acc"]
    state.epoch = int(metrics["epoch"])
    state.step_in_epoch, state.partial_loss_sum, state.partial_correct = 0, 0.0, 0
    state.epoch_rng = None


def _diverged(state: TrainState, first_bad_step: torch.Tensor) -> bool:
    """Read the device-side divergence flag (one host sync); mark the state if it is set."""
    bad = int(first_bad_step)
    if bad < 0:
        return False
    state.status = "diverged"
    state.diverged_at_step = bad
    log.warning("step %d: the training loss is not finite; the run diverged", bad)
    return True
