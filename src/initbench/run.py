"""One benchmark run from a resolved config dict: check, resume or start, train, record.

``src/train.py`` composes the config with Hydra and hands this module plain values; a notebook
can call :func:`run` with a dict of the same shape (see ``conf/train.yaml``).

A run directory is resumable: every epoch (and on SIGTERM/SIGINT) the full training state is
saved atomically to ``checkpoint.pt`` (see :mod:`initbench.checkpoint`), and running again on
the same directory continues from it with identical results.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from initbench import inits
from initbench.build import Prepared, make_sinks, prepare, validate
from initbench.checkpoint import (
    CHECKPOINT,
    config_changes,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from initbench.diagnose import init_cost_scalars, log_init, step0_report
from initbench.engine import Callback, SingleModel, TrainState, fit, optimizer_for
from initbench.errors import Interrupted, RunFailed, UserError, how_to_continue
from initbench.io import atomic_write, dumps_strict, read_json, read_yaml, write_json_atomic
from initbench.lock import hold_run_dir
from initbench.models.residual import added_parameters, lr_scales
from initbench.signals import StopNow, stop_on_signals
from initbench.telemetry import MultiSink, Telemetry, build_telemetry
from initbench.telemetry.weights import record_weights
from initbench.threads import choose_threads

log = logging.getLogger(__name__)

MakeOptimizer = Callable[..., torch.optim.Optimizer]


def run(
    cfg: Mapping[str, Any],
    run_dir: str | Path,
    make_optimizer: MakeOptimizer,
    choices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one benchmark in ``run_dir`` (resuming from its checkpoint if it has one) and write
    ``config.yaml``, ``checkpoint.pt``, ``metrics.jsonl``, ``weights.npz`` and ``summary.json``.
    Returns the summary.

    Raises:
        UserError: a bad config value, missing/corrupt data, an unwritable run directory or a
            checkpoint from another config, before any training.
        Interrupted: SIGTERM/SIGINT arrived; the state was saved first (or, before training
            started, the run stopped at once: nothing to save).
    """
    cfg, run_dir = dict(cfg), Path(run_dir)
    validate(cfg)
    check_writable(run_dir)
    # One process per run directory, for the whole run (initbench.lock). From here on a
    # SIGTERM/SIGINT stops the run: at once while it prepares (loading, building,
    # initializing: nothing to save yet), after its next step, with a checkpoint, once
    # training runs; a second Ctrl-C stops at once.
    with (
        hold_run_dir(run_dir),
        stop_on_signals() as received_signal,
        interrupted_before_training([cfg], [run_dir]),
    ):
        done = already_done(cfg, run_dir)
        if done is not None:
            return done
        ckpt = resumable_checkpoint(cfg, run_dir)
        with atomic_write(run_dir / "config.yaml") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        check_optimizer(make_optimizer)
        prep = prepare_or_record_failure(cfg, run_dir)
        session = Session(cfg, run_dir, prep, make_optimizer, ckpt, choices)
        return session.run(received_signal)


@contextmanager
def interrupted_before_training(
    cfgs: Sequence[Mapping[str, Any]], run_dirs: Sequence[Path]
) -> Iterator[None]:
    """A signal before training started (:class:`StopNow`) is recorded as ``interrupted`` in
    the summary.json of each run (one, or a pack's members), and goes up as
    :class:`Interrupted` saying that nothing was saved."""
    try:
        yield
    except StopNow as stop:
        messages = [
            record_stop_before_training(cfg, run_dir, stop.signum)
            for cfg, run_dir in zip(cfgs, run_dirs, strict=True)
        ]
        raise Interrupted(stop.signum, run_dirs[0], message=messages[-1]) from None


def record_stop_before_training(cfg: Mapping[str, Any], run_dir: Path, signum: int) -> str:
    """Record a stop before training in summary.json as ``interrupted``; returns what to say."""
    name = signal.Signals(signum).name
    if (run_dir / CHECKPOINT).exists():
        message = (
            f"stopped by {name} before training resumed; the checkpoint in {run_dir} is as "
            f"it was. {how_to_continue(run_dir)}"
        )
    else:
        message = (
            f"stopped by {name} before training started: no checkpoint yet, nothing to "
            f"resume; running the same command again starts over."
        )
    old = read_json(run_dir / "summary.json")
    summary = old if isinstance(old, dict) else {"run_name": cfg["run_name"]}
    summary.update(status="interrupted", error=message)
    write_json_atomic(run_dir / "summary.json", summary)
    return message


def resume_point(state: TrainState) -> str:
    """Where a resumed run stands, in words: ``12 epochs done; epoch 13 goes on from its step
    31 (1148 steps done in all)``, or ``3 epochs done; epoch 4 starts (96 steps done in all)``."""
    done = f"{state.epoch} epoch{'s' if state.epoch != 1 else ''} done"
    if state.step_in_epoch:
        where = f"epoch {state.epoch + 1} goes on from its step {state.step_in_epoch + 1}"
    else:
        where = f"epoch {state.epoch + 1} starts"
    return f"{done}; {where} ({state.global_step} steps done in all)"


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test.{os.getpid()}"  # its own: another may be probing
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to the run directory {run_dir}: {err}") from None


def already_done(cfg: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """The old summary when the run directory holds a run of this config that is over
    (diverged, or finished with at least ``trainer.epochs`` epochs); None when there is
    training to do. A finished run of another config is refused, as a checkpoint would be."""
    if not cfg["resume"]:
        return None
    old = read_json(run_dir / "summary.json") or {}
    status = old.get("status")
    done = (old.get("epochs_completed") or 0) >= cfg["trainer"]["epochs"]
    if status == "diverged" or (status == "finished" and done):
        refuse_other_config(cfg, read_yaml(run_dir / "config.yaml"), run_dir, f"a {status} run")
        log.info("run %s is already %s; nothing to do (resume=false trains it again in a new "
                 "folder)", run_dir, status)  # fmt: skip
        return old
    return None


def resumable_checkpoint(cfg: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """The run directory's checkpoint, if resuming and it has one; refused if from another
    config."""
    if not cfg["resume"]:
        return None
    ckpt = load_checkpoint(run_dir)
    if ckpt is not None:
        refuse_other_config(cfg, ckpt["config"], run_dir, "a checkpoint")
    return ckpt


def refuse_other_config(
    cfg: Mapping[str, Any], old: Mapping[str, Any] | None, run_dir: Path, holds: str
) -> None:
    """UserError listing the differences when ``old`` (what ``run_dir`` holds) is another
    config than ``cfg``, beyond the changes a resume allows (checkpoint.RESUMABLE_CHANGES)."""
    if old is None:
        raise UserError(
            f"{run_dir} holds {holds} without a readable config.yaml, so it cannot be compared "
            f"with this config; use another run directory or resume=false to start over"
        )
    changes = config_changes(old, cfg)
    if changes:
        raise UserError(
            f"{run_dir} holds {holds} of a different config ({'; '.join(changes)}); "
            f"use another run directory or resume=false to start over"
        )


def check_optimizer(make_optimizer: MakeOptimizer) -> None:
    """Bad optimizer values (a negative lr, ...) before any data is loaded."""
    try:
        make_optimizer([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as err:
        raise UserError(f"optimizer: {err}") from None


def prepare_or_record_failure(cfg: Mapping[str, Any], run_dir: Path, **kwargs: Any) -> Prepared:
    """:func:`prepare` (``kwargs``: its options); missing data or an impossible shape is
    recorded in summary.json (for sweeps and reports) before the error goes up."""
    try:
        return prepare(cfg, **kwargs)
    except UserError as err:
        record_failure(cfg, run_dir, err)
        raise


def record_failure(cfg: Mapping[str, Any], run_dir: Path, err: UserError) -> dict[str, Any]:
    """A run that could not start, in summary.json (for sweeps and reports); returns it."""
    summary = {"status": "failed", "error": str(err), "run_name": cfg["run_name"]}
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


@contextmanager
def recording_early_ends(
    open_sessions: Callable[[], Sequence[Session]], run_dir: Path, failed: str
) -> Iterator[None]:
    """Whatever ends training early is recorded in the summary.json of each session still open
    (one run, or a pack's unfinished members) before it goes up: a stop before the first step
    (:class:`StopNow`, recorded by interrupted_before_training; SIGTERM marks W&B preempting,
    as a stop in training does, so the run is requeued), a second Ctrl-C as ``interrupted``
    (no checkpoint of that moment), a failed write (a full disk) as ``failed`` with the reason
    (``RunFailed``: the reason + ``failed``), any other error as ``failed``."""
    try:
        yield
    except Interrupted:
        raise
    except StopNow as stop:
        for session in open_sessions():
            if stop.signum == signal.SIGTERM:
                session.sink.mark_preempting()
            session._stop()
        raise
    except KeyboardInterrupt:
        for session in open_sessions():
            session._stop(status="interrupted", error="stopped at once by a second Ctrl-C")
        raise Interrupted(signal.SIGINT, run_dir, saved=False) from None
    except OSError as err:
        reason = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
        error = f"{type(err).__name__}: {reason}"
        unrecorded = [
            s.run_dir for s in open_sessions() if not s._stop(status="failed", error=error)
        ]
        if unrecorded:  # the disk refused those too: say so rather than claim they are failed
            names = ", ".join(str(d) for d in unrecorded[:3]) + (
                ", ..." if len(unrecorded) > 3 else ""
            )
            failed = (
                f"; {len(unrecorded)} summary.json file(s) could not be written and still say "
                f"running ({names}); their last checkpoints are whole: free space and run the "
                "same command to resume"
            )
        raise RunFailed(f"{reason}{failed}") from None
    except BaseException as err:
        for session in open_sessions():
            session._stop(status="failed", error=f"{type(err).__name__}: {err}")
        raise


def first_summary(
    cfg: Mapping[str, Any],
    prep: Prepared,
    optimizer: torch.optim.Optimizer,
    wandb_run_id: str | None,
    choices: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A started run's summary.json: what it is (the choices, the model's size, what the init
    measured) and ``status: running``."""
    summary = {
        "status": "running",
        "run_name": cfg["run_name"],
        "init_scheme": inits.resolve(prep.init_name),
        "choices": {
            "init": (choices or {}).get("init") or prep.init_name,  # normal_std10, kaiming
            "model": cfg["model"]["name"],
            "dataset": cfg["dataset"]["name"],
            "activation": cfg["activation"]["name"],
            "optimizer": (choices or {}).get("optimizer", type(optimizer).__name__.lower()),
            "seed": cfg["seed"],
            "experiment": cfg["experiment_name"],
        },
        "device": str(prep.device),
        "n_params": sum(p.numel() for p in prep.model.parameters()),
        "n_params_added": added_parameters(prep.model),  # by the init (Fixup's scalars, ...)
        "num_classes": prep.data.num_classes,
        "init_report": prep.init_report,
        "init_cost": prep.init_cost.as_dict(),
        "wandb_run_id": wandb_run_id,
    }
    added = f", {summary['n_params_added']} added by the init" if summary["n_params_added"] else ""
    log.info(
        "run %s: %s on %s (%d params%s), init %s, activation %s, device %s",
        cfg["run_name"], summary["choices"]["model"], cfg["dataset"]["name"],
        summary["n_params"], added, prep.init_name, cfg["activation"]["name"], prep.device,
    )  # fmt: skip
    return summary


def write_metrics(run_dir: Path, state: TrainState) -> None:
    """``metrics.jsonl``: one row per epoch so far."""
    with atomic_write(run_dir / "metrics.jsonl") as f:
        f.writelines(dumps_strict(row) + "\n" for row in state.history)


def epoch_callbacks(sessions: Sequence[Session]) -> list[Callback]:
    """The per-epoch concerns of a run (a pack of one) or a pack's members: to add a metric,
    write an ``engine.Callback`` whose ``epoch_metrics`` measures it and add it here."""
    callbacks: list[Callback] = [Checkpoints(sessions)]
    if sessions[0].prep.data.holdout_x is not None:
        callbacks.insert(0, Holdout())  # before the checkpoint records the epoch
    return callbacks


def start_threads(session: Session) -> None:
    """A CPU run's threads, chosen once before training (initbench.threads.choose_threads): a
    resumed run takes the count it started with."""
    if session.prep.device.type == "cpu":
        fixed = session.cfg["trainer"]["num_threads"]
        log.info("CPU threads: %s", choose_threads(fixed, session.saved_threads))


class Holdout(Callback):
    """Each member's loss and accuracy on the holdout split (``trainer.holdout``) every epoch,
    evaluated as the test split is (a pack's members in one batched pass): ``holdout/loss``
    and ``holdout/acc``, the validation data the report tunes by."""

    def epoch_metrics(self, trainable: Any, members: list[int]) -> dict[str, list[float]]:
        loss, acc = trainable.evaluate("holdout")
        return {"holdout/loss": loss, "holdout/acc": acc}


class Checkpoints(Callback):
    """Every ``trainer.checkpoint_every_epochs`` epochs and after the last, each member's
    session saves its checkpoint (a plain run is a pack of one)."""

    def __init__(self, sessions: Sequence[Session]) -> None:
        self.sessions = sessions

    def on_epoch_end(self, members: list[int]) -> None:
        for k in members:
            session = self.sessions[k]
            trainer, state = session.cfg["trainer"], session.state
            if (
                state.epoch % trainer["checkpoint_every_epochs"] == 0
                or state.epoch == trainer["epochs"]
            ):
                session.checkpoint(state)


class Session:
    """A run between preparation and its end: the optimizer, the data order, the sinks and the
    summary, and the files they write."""

    packed = False  # a member of a pack (initbench.run_pack) shares its process with others

    def __init__(
        self,
        cfg: Mapping[str, Any],
        run_dir: Path,
        prep: Prepared,
        make_optimizer: MakeOptimizer,
        ckpt: Mapping[str, Any] | None,
        choices: Mapping[str, Any] | None,
    ) -> None:
        self.cfg, self.run_dir, self.prep = cfg, run_dir, prep
        self.fresh = ckpt is None
        self.saved_threads = ckpt.get("threads") if ckpt else None  # the count it started with
        self.optimizer = optimizer_for(
            make_optimizer, prep.model.parameters(), lr_scales(prep.model)
        )
        self.data_gen = torch.Generator().manual_seed(cfg["seed"] + 1)
        self.state = TrainState()
        self.wall_before = 0.0
        wandb_id = None
        if ckpt is not None:
            self._restore(ckpt)
            wandb_id = ckpt.get("wandb_run_id")
        else:  # a fresh start: samples of the initial weights, for the report
            record_weights(run_dir, "init", prep.model)
        resume_step = None if self.fresh else self.state.global_step + 1
        self.sink: MultiSink = make_sinks(cfg, run_dir, resume_step=resume_step,
                                          wandb_id=wandb_id, packed=self.packed)  # fmt: skip
        self.summary = first_summary(cfg, prep, self.optimizer, self.sink.wandb_run_id, choices)
        write_json_atomic(run_dir / "summary.json", self.summary)
        self.start = time.perf_counter()

    def _restore(self, ckpt: Mapping[str, Any]) -> None:
        self.prep.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState.from_state_dict(ckpt["train_state"])
        cost = ckpt.get("init_cost")  # what the init spent when the run started, not now
        if isinstance(cost, dict):
            known = {k: cost[k] for k in inits.InitCost.__dataclass_fields__ if k in cost}
            self.prep.init_cost = inits.InitCost(**known)
        restore_rng(ckpt, self.prep.device, self.data_gen)
        self.wall_before = ckpt.get("wall_s") or 0.0
        log.info("resuming %s: %s", self.run_dir, resume_point(self.state))

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.start

    def checkpoint(self, state: TrainState) -> None:
        """Save the full training state, then the metrics so far."""
        save_checkpoint(
            self.run_dir,
            {
                "config": self.cfg,
                "train_state": state.state_dict(),
                "model": self.model_state(),
                "optimizer": self.optimizer_state(),
                **rng_state(self.prep.device, self.data_gen),
                "wandb_run_id": self.sink.wandb_run_id,
                "wall_s": self.wall_s(),
                "init_cost": self.prep.init_cost.as_dict(),
                "pack": self.summary.get("pack"),  # a member's pack, to see a resume in another
                "threads": torch.get_num_threads(),  # a resume computes with the same count
            },
        )
        write_metrics(self.run_dir, state)

    def model_state(self) -> dict[str, Any]:
        return self.prep.model.state_dict()

    def optimizer_state(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def run(self, received_signal: Callable[[], int | None]) -> dict[str, Any]:
        """Train and record the outcome; whatever ends it early is recorded first
        (:func:`recording_early_ends`)."""
        failed = f" (in {self.run_dir}); the run is recorded as failed in summary.json"
        with recording_early_ends(lambda: [self], self.run_dir, failed):
            state = self.train(received_signal)
            return self.finish(state, received_signal())

    def _stop(self, **fields: Any) -> bool:
        """Record why the run stopped early, if the disk lets us, and close the sinks; whether
        summary.json was written."""
        self.summary.update(fields, wall_s=self.wall_s())
        recorded = True
        try:
            write_json_atomic(self.run_dir / "summary.json", self.summary)
        except OSError as err:
            log.error("could not write %s: %s", self.run_dir / "summary.json", err)
            recorded = False
        try:
            self.sink.finish()
        except Exception as err:  # never mask why the run stopped
            log.error("closing the sinks failed: %s", err)
        return recorded

    def train(self, received_signal: Callable[[], int | None]) -> TrainState:
        """The step-0 report on a fresh start, then the training loop."""
        prep, trainer = self.prep, self.cfg["trainer"]
        telemetry = self.telemetry()
        self.step0()
        model = SingleModel(
            prep.train_model, prep.data, self.optimizer, self.data_gen,
            batch_size=trainer["batch_size"], eval_batch_size=trainer["eval_batch_size"],
            precision=prep.precision, channels_last=prep.channels_last, observer=telemetry,
        )  # fmt: skip
        start_threads(self)
        fit(model, [self.state], epochs=trainer["epochs"], sinks=[self.sink],
            callbacks=epoch_callbacks([self]),
            should_stop=lambda: received_signal() is not None)  # fmt: skip
        if self.state.status == "interrupted":
            self.checkpoint(self.state)
        return self.state

    def telemetry(self) -> Telemetry | None:
        """The observer the config's ``telemetry`` node asks for, on this run's model and sinks."""
        data = self.prep.data
        return build_telemetry(
            self.cfg["telemetry"], self.prep.model, self.sink,
            steps_per_epoch=data.num_batches("train", self.cfg["trainer"]["batch_size"]),
            example=data.train_x[:1],
        )  # fmt: skip

    def step0(self) -> None:
        """What the init logged and the step-0 report, on a fresh start only."""
        if self.fresh:
            log_init(self.prep.init_report, self.sink)
            self.sink.log_scalars(init_cost_scalars(self.prep.init_cost), 0)
            step0_report(self.cfg, self.prep, self.run_dir, self.sink)

    def finish(self, state: TrainState, signum: int | None) -> dict[str, Any]:
        """Record the outcome; an interrupted run marks W&B preempting and raises Interrupted."""
        # also the epochs since the last checkpoint (a diverged run)
        write_metrics(self.run_dir, state)
        self.summary.update(
            status=state.status,
            epochs_completed=state.epoch,
            global_step=state.global_step,
            final=state.final,
            best_val_acc=state.best_val_acc,
            diverged_at_step=state.diverged_at_step,
            wall_s=self.wall_s(),
        )
        if state.status == "interrupted":
            signum = signum or signal.SIGTERM
            if signum == signal.SIGTERM:
                self.sink.mark_preempting()  # W&B requeues a preempted sweep run (non-zero exit)
            write_json_atomic(self.run_dir / "summary.json", self.summary)
            self.sink.finish()
            raise Interrupted(signum, self.run_dir)
        record_weights(self.run_dir, "final", self.prep.model)  # next to the initial samples
        keys = ("status", "epochs_completed", "best_val_acc", "diverged_at_step", "num_classes")
        self.sink.log_summary({k: self.summary[k] for k in keys})
        self.sink.finish()
        write_json_atomic(self.run_dir / "summary.json", self.summary)
        log.info("%s after %d epoch(s): best val acc %s; run directory %s", state.status,
                 state.epoch, self.summary["best_val_acc"], self.run_dir)  # fmt: skip
        return self.summary
