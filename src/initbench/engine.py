"""The training loop, the package's only one: plain objects in, resumable states out (no Hydra).

:func:`fit` trains a :class:`Trainable`: one model (:class:`SingleModel`, a plain run) or a
pack's members stepped as one (:class:`initbench.packing.PackedTraining`). Each member has its
own :class:`TrainState`; the loop runs the epochs and steps, tracks divergence, honours stop
requests, evaluates and records every epoch, and hands the per-epoch concerns (checkpoints, a
diverged member, extra metrics) to :class:`Callback` objects in a list. Per-step concerns
(telemetry) are a member's :class:`StepObserver`, which its trainable calls around the step.

Metrics are accumulated on the device and read back once per epoch; divergence is tracked on
the device and checked every ``DIVERGENCE_CHECK_EVERY`` steps, so the step itself never waits
for the host. Everything needed to continue exactly (counters, the epoch's data-order state,
the partial epoch's sums) lives in each member's :class:`TrainState`, which the caller
checkpoints. :func:`train` is the plain run's call: one model, one state.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
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


def optimizer_for(
    make_optimizer: Callable[..., torch.optim.Optimizer],
    params: Iterable[torch.Tensor],
    scales: Sequence[float] | None = None,
) -> torch.optim.Optimizer:
    """``make_optimizer(params)``; with ``scales`` (one learning-rate factor per parameter,
    :func:`initbench.models.residual.lr_scales`) other than all 1, one parameter group per
    factor, in order of first appearance, each at the optimizer's lr times its factor. The
    optimizer's own order (:func:`optimizer_params`) is then group by group."""
    params = list(params)
    if scales is None or all(s == 1.0 for s in scales):
        return make_optimizer(params)
    groups: dict[float, list[torch.Tensor]] = {}
    for param, scale in zip(params, scales, strict=True):
        groups.setdefault(float(scale), []).append(param)
    optimizer = make_optimizer([{"params": group} for group in groups.values()])
    for group, scale in zip(optimizer.param_groups, groups, strict=True):
        group["lr"] *= scale
    return optimizer


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters in its own order (the indices of its ``state_dict``)."""
    return [p for group in optimizer.param_groups for p in group["params"]]


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
    split: str = "test",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``split`` (the test split, or the holdout)."""
    model.eval()
    device = data.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    for x, y in data.batches(split, batch_size):
        with autocast_context(device, precision):
            logits = model(to_memory_format(x, channels_last))
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += y.shape[0]
    return float(loss_sum) / n, int(correct) / n


class Trainable(Protocol):
    """What :func:`fit` trains: ``len(self)`` members still training, stepped together.

    A member is an index into the states :func:`fit` was given while they all train; once
    some have been dropped (diverged), indices are positions among those left."""

    device: torch.device

    def __len__(self) -> int: ...

    def num_batches(self) -> int:
        """Training batches per epoch."""
        ...

    def num_train(self) -> int:
        """Training examples per epoch (the divisor of the epoch's mean loss and accuracy)."""
        ...

    def epoch(self, states: Sequence[TrainState]) -> Iterable[Any]:
        """This epoch's batches from ``states[0].step_in_epoch`` on, each member's data-order
        generator saved in (a fresh epoch) or restored from (a resumed one) its state."""
        ...

    def step(self, batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One optimizer step: each member's mean loss (K,), correct predictions (K,), and
        the examples per member in the batch."""
        ...

    def evaluate(self, split: str = "test") -> tuple[list[float], list[float]]:
        """Each member's mean loss and accuracy on ``split`` (the test split, or the holdout)."""
        ...

    def train(self, mode: bool = True) -> None: ...

    def models(self) -> list[nn.Module]:
        """Each member's own module (a pack's: views into its stacks), for per-member reads."""
        ...

    def drop(self, keep: Sequence[int]) -> None:
        """Keep only the members at positions ``keep`` (the others diverged)."""
        ...


class Callback:
    """Per-epoch concerns of :func:`fit`, each in one place; override what you need.
    ``member`` is an index into the states given to :func:`fit`."""

    def epoch_metrics(self, trainable: Trainable, members: list[int]) -> dict[str, list[float]]:
        """Extra metrics of the epoch just ended, one value per member still training (in the
        order of ``trainable.models()``), logged and recorded with ``train/*`` and ``val/*``."""
        return {}

    def on_epoch_end(self, members: list[int]) -> None:
        """After an epoch was recorded for ``members`` (checkpoints)."""

    def on_diverged(self, member: int) -> None:
        """``member``'s loss turned non-finite; called before it leaves the trainable."""


class SingleModel:
    """One model as a :class:`Trainable`: the step of a plain run.

    Args:
        model: the network, already initialized and on the data's device.
        data: a device-resident dataset.
        optimizer: an optimizer over ``model``'s parameters.
        generator: CPU generator for the data order and augmentation (its state is part of
            what a checkpoint must hold).
        batch_size, eval_batch_size: training and evaluation batch sizes.
        precision: "fp32" or "bf16" (autocast on CUDA only).
        channels_last: feed image batches in channels_last layout (the model should be
            converted too).
        observer: called around every optimizer step (telemetry).
    """

    def __init__(
        self,
        model: nn.Module,
        data: DeviceDataset,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        *,
        batch_size: int,
        eval_batch_size: int = 1024,
        precision: str = "fp32",
        channels_last: bool = False,
        observer: StepObserver | None = None,
    ) -> None:
        self.model, self.data, self.optimizer, self.generator = model, data, optimizer, generator
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.precision, self.channels_last, self.observer = precision, channels_last, observer
        self.device = data.device

    def __len__(self) -> int:
        return 1

    def num_batches(self) -> int:
        return self.data.num_batches("train", self.batch_size)

    def num_train(self) -> int:
        return len(self.data.train_y)

    def epoch(self, states: Sequence[TrainState]) -> Iterable[Any]:
        (state,) = states
        if state.step_in_epoch == 0:
            state.epoch_rng = self.generator.get_state()
        else:  # resume mid-epoch: replay this epoch's draws, skip the batches already done
            self.generator.set_state(state.epoch_rng)
        batches = self.data.batches("train", self.batch_size, self.generator)
        return itertools.islice(batches, state.step_in_epoch, None)

    def step(self, batch: Any, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y = batch
        observer = self.observer
        if observer is not None:
            observer.before_step(step)
        with autocast_context(self.device, self.precision):
            logits = self.model(to_memory_format(x, self.channels_last))
            loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if observer is not None:
            observer.after_backward(step)
        self.optimizer.step()
        if observer is not None:
            observer.after_step(step)
        correct = (logits.detach().argmax(1) == y).sum()
        return loss.detach().reshape(1), correct.reshape(1), len(y)

    def evaluate(self, split: str = "test") -> tuple[list[float], list[float]]:
        loss, acc = evaluate(
            self.model, self.data, self.eval_batch_size, self.precision, self.channels_last, split
        )
        return [loss], [acc]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def models(self) -> list[nn.Module]:
        return [self.model]

    def drop(self, keep: Sequence[int]) -> None:
        pass  # one member: it is never dropped while training goes on


class _EpochEnd(Callback):
    """``on_epoch_end(state)`` of :func:`train` as a callback."""

    def __init__(self, states: Sequence[TrainState], fn: Callable[[TrainState], None]) -> None:
        self.states, self.fn = states, fn

    def on_epoch_end(self, members: list[int]) -> None:
        for k in members:
            self.fn(self.states[k])


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
    callbacks: Sequence[Callback] = (),
) -> TrainState:
    """Train ``model`` on ``data`` until ``epochs`` epochs are done, evaluating every epoch:
    :func:`fit` on a :class:`SingleModel` (see it for ``model`` ... ``observer``).

    Args:
        epochs: total passes over the training split (including those already in ``state``).
        state: where to continue from (a restored checkpoint); a fresh start when None.
        sink: receives ``train/*`` and ``val/*`` scalars once per epoch.
        on_epoch_end: called with the state after each completed epoch (checkpointing).
        should_stop: polled after every step; when it returns True the loop stops with
            status "interrupted" and a state that continues mid-epoch.
        callbacks: more per-epoch concerns (:class:`Callback`).

    Returns:
        The final state: "finished", "diverged" (a non-finite training loss; a result, not an
        error) or "interrupted". ``final`` holds the metrics of the last epoch whose metrics
        were all finite (empty if none was); ``history`` every epoch's, as measured.
    """
    state = state or TrainState()
    single = SingleModel(
        model, data, optimizer, generator, batch_size=batch_size, eval_batch_size=eval_batch_size,
        precision=precision, channels_last=channels_last, observer=observer,
    )  # fmt: skip
    extra = [_EpochEnd([state], on_epoch_end)] if on_epoch_end is not None else []
    fit(single, [state], epochs=epochs, sinks=[sink], callbacks=[*callbacks, *extra],
        should_stop=should_stop)  # fmt: skip
    return state


def fit(
    trainable: Trainable,
    states: Sequence[TrainState],
    *,
    epochs: int,
    sinks: Sequence[Sink | None] | None = None,
    callbacks: Sequence[Callback] = (),
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Train every member of ``trainable`` until ``epochs`` epochs are done, evaluating every
    epoch; each member's state ends "finished", "diverged" or "interrupted".

    A member whose loss turns non-finite is found at the next divergence check (every
    ``DIVERGENCE_CHECK_EVERY`` steps and at each epoch's end), recorded diverged, told to the
    callbacks and dropped; the others go on. ``should_stop`` is polled after every step: when
    it returns True, every member still training stops "interrupted" with a state that
    continues mid-epoch (after an epoch's end: at the next epoch's start).

    Args:
        trainable: one model or a pack, its members in the order of ``states``.
        states: each member's state (restored from a checkpoint, or fresh); they must stand
            at one step.
        epochs: total passes over the training split (including those already done).
        sinks: each member's sink (``train/*`` and ``val/*`` once per epoch), or None.
        callbacks: per-epoch concerns (:class:`Callback`), called in order.
    """
    if len(states) != len(trainable):
        raise ValueError(f"{len(states)} states for {len(trainable)} members")
    starts = {(s.epoch, s.global_step, s.step_in_epoch) for s in states}
    if len(starts) != 1:
        raise ValueError(f"the members of a pack must start at one step (got {starts})")
    sinks = list(sinks) if sinks is not None else [None] * len(states)
    _Fit(trainable, list(states), sinks, list(callbacks), should_stop, epochs).run()


class _Fit:
    """:func:`fit`'s loop and what it tracks: the members still training (``ids``), the first
    non-finite step of each (on the device), the epoch's sums."""

    def __init__(self, trainable, states, sinks, callbacks, should_stop, epochs) -> None:
        self.t, self.states, self.sinks = trainable, states, sinks
        self.callbacks, self.should_stop, self.epochs = callbacks, should_stop, epochs
        self.ids = list(range(len(states)))
        self.single = len(states) == 1  # a plain run's wording in the log
        device = trainable.device
        self.first_bad = torch.full((len(states),), -1, device=device, dtype=torch.int64)

    def live(self) -> list[TrainState]:
        return [self.states[i] for i in self.ids]

    def stop_requested(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def run(self) -> None:
        for state in self.states:
            state.status = "running"
        device = self.t.device
        for epoch in range(self.states[0].epoch + 1, self.epochs + 1):
            start = time.perf_counter()
            live = self.live()
            batches = self.t.epoch(live)
            loss_sum = torch.tensor([s.partial_loss_sum for s in live], device=device,
                                    dtype=torch.float64)  # fmt: skip
            correct = torch.tensor([s.partial_correct for s in live], device=device,
                                   dtype=torch.int64)  # fmt: skip
            self.t.train()
            members = "" if self.single else f" ({len(live)} members)"
            progress = Progress(  # a bar on a terminal, else a line every ~10 s (progress.py)
                self.t.num_batches(), f"epoch {epoch}/{self.epochs}{members}",
                initial=live[0].step_in_epoch, write=log.info,
            )  # fmt: skip
            for batch in progress.wrap(batches):
                step = live[0].global_step
                losses, right, b = self.t.step(batch, step)
                for state in live:
                    state.global_step += 1
                    state.step_in_epoch += 1
                self.first_bad = torch.where(
                    (self.first_bad < 0) & ~torch.isfinite(losses), step, self.first_bad
                )
                loss_sum += losses * b
                correct += right
                if live[0].global_step % DIVERGENCE_CHECK_EVERY == 0:
                    loss_sum, correct = self.drop_diverged(loss_sum, correct)
                    if not self.ids:
                        return
                    live = self.live()
                if self.stop_requested():
                    loss_sum, correct = self.drop_diverged(loss_sum, correct)
                    for k, state in enumerate(self.live()):  # never checkpoint a diverged one
                        state.status = "interrupted"
                        state.partial_loss_sum = float(loss_sum[k])
                        state.partial_correct = int(correct[k])
                    return
            loss_sum, correct = self.drop_diverged(loss_sum, correct)
            if not self.ids:
                return
            self.end_epoch(epoch, loss_sum, correct, start)
            if self.stop_requested() and epoch < self.epochs:
                for state in self.live():
                    state.status = "interrupted"
                return
        for state in self.live():
            state.status = "finished"

    def drop_diverged(
        self, loss_sum: torch.Tensor, correct: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read the first non-finite steps (one host sync); record the members that have one
        diverged, tell the callbacks, and drop them."""
        bad = self.first_bad.tolist()
        if all(b < 0 for b in bad):
            return loss_sum, correct
        keep = [k for k, b in enumerate(bad) if b < 0]
        for k, b in enumerate(bad):
            if b < 0:
                continue
            member = self.ids[k]
            state = self.states[member]
            state.status, state.diverged_at_step = "diverged", b
            if self.single:
                log.warning("step %d: the training loss is not finite; the run diverged", b)
            else:
                log.warning(
                    "member %d: step %d: the training loss is not finite; it diverged", member, b
                )
            for callback in self.callbacks:
                callback.on_diverged(member)
        if keep:
            self.t.drop(keep)
        index = torch.tensor(keep, device=self.first_bad.device, dtype=torch.int64)
        self.ids = [self.ids[k] for k in keep]
        self.first_bad = self.first_bad.index_select(0, index)
        return loss_sum.index_select(0, index), correct.index_select(0, index)

    def end_epoch(
        self, epoch: int, loss_sum: torch.Tensor, correct: torch.Tensor, start: float
    ) -> None:
        """Evaluate, record the epoch for every member still training, tell the callbacks."""
        n_train = self.t.num_train()
        val_loss, val_acc = self.t.evaluate()
        columns = {
            "train/loss": (loss_sum / n_train).tolist(),
            "train/acc": (correct.double() / n_train).tolist(),
            "val/loss": val_loss,
            "val/acc": val_acc,
        }
        for callback in self.callbacks:
            columns.update(callback.epoch_metrics(self.t, list(self.ids)))
        for k, member in enumerate(self.ids):
            metrics = {key: values[k] for key, values in columns.items()}
            record_epoch(self.states[member], {**metrics, "epoch": epoch}, self.sinks[member])
        seconds = time.perf_counter() - start
        if self.single:
            extra = "".join(  # a callback's metrics (holdout/acc ...) after the built-in ones
                f"  {k} {v[0]:.4f}" for k, v in columns.items() if k not in CORE_METRICS
            )
            log.info(
                "epoch %d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f%s  (%.2f s)",
                epoch, self.epochs, columns["train/loss"][0], columns["train/acc"][0],
                val_loss[0], val_acc[0], extra, seconds,
            )  # fmt: skip
        else:
            log.info(
                "epoch %d/%d: %d member(s), val acc %s  (%.2f s)",
                epoch, self.epochs, len(self.ids), " ".join(f"{a:.3f}" for a in val_acc), seconds,
            )  # fmt: skip
        for callback in self.callbacks:
            callback.on_epoch_end(list(self.ids))


CORE_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")


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
