"""One benchmark run from a resolved config dict: validate, load, build, initialize, train, record.

``train.py`` composes the config with Hydra and hands this module plain values; a notebook
can call :func:`run` with a dict of the same shape (see ``conf/train.yaml``).

A run directory is resumable: every epoch (and on SIGTERM/SIGINT) the full training state is
saved atomically to ``checkpoint.pt`` (the one before is kept as ``checkpoint.prev.pt``), and
running again on the same directory continues from it with identical results.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from initbench import data as datasets
from initbench import inits
from initbench.diagnose import check_diagnose_params, step0_report
from initbench.engine import TrainState, train
from initbench.io import fsync_replace, read_json, write_json_atomic
from initbench.models import build_model, check_model_params, make_activation
from initbench.telemetry import (
    MultiSink,
    Sink,
    TensorBoardSink,
    WandbSink,
    build_telemetry,
    check_telemetry_params,
)
from initbench.telemetry.weights import record_weights

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
SWITCHES = ("auto", True, False)  # trainer.channels_last
MODEL_KEYS = ("depth", "width", "widths", "dropout", "channels", "norm", "bias")
INIT_BATCH = 256  # examples handed to data-dependent initializers
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
# Config keys that may change between a run and its resumption: where it runs, how long, and
# what is observed, none of which changes the results.
RESUMABLE_CHANGES = ("trainer.device", "trainer.num_threads", "trainer.epochs", "data_dir",
                     "logger", "resume", "telemetry", "diagnose")  # fmt: skip


class UserError(Exception):
    """Bad input from the user (config values, missing data): reported without a traceback."""


class Interrupted(Exception):
    """The run was stopped by a signal after saving a checkpoint; exit with 128 + signum."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        self.signum = signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name}; checkpoint saved in {run_dir}. "
            f"Run the same command with hydra.run.dir={run_dir} to continue."
        )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _int_at_least(value: Any, field: str, low: int) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value >= low,
        f"{field} must be an integer >= {low} (got {value!r})",
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if present, else cpu; otherwise the named device, which must exist."""
    valid = "auto, cpu, cuda, cuda:N, mps"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"trainer.device={name!r} is not a device; valid: {valid}") from None
    if device.type == "cuda":
        _require(torch.cuda.is_available(), f"trainer.device={name!r} but CUDA is not available")
        count = torch.cuda.device_count()
        _require(
            (device.index or 0) < count, f"trainer.device={name!r} but only {count} CUDA devices"
        )
    elif device.type == "mps":
        _require(torch.backends.mps.is_available(), f"trainer.device={name!r} but MPS is missing")
    else:
        _require(device.type == "cpu", f"trainer.device={name!r} is not supported; valid: {valid}")
    return device


def model_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The model group's builder parameters (everything but its label and arch)."""
    return {k: cfg["model"][k] for k in MODEL_KEYS if k in cfg["model"]}


def split_group(node: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``{"name": n, **params}`` -> ``(n, params)`` for the init, activation and dataset groups."""
    params = dict(node)
    return params.pop("name"), params


def validate(cfg: Mapping[str, Any]) -> torch.device:
    """Check every user-facing value before any data is loaded; returns the resolved device."""
    trainer = cfg["trainer"]
    _int_at_least(trainer["epochs"], "trainer.epochs", 1)
    _int_at_least(trainer["batch_size"], "trainer.batch_size", 1)
    _int_at_least(trainer["eval_batch_size"], "trainer.eval_batch_size", 1)
    _int_at_least(cfg["seed"], "seed", 0)
    _int_at_least(trainer.get("checkpoint_every_epochs", 1), "trainer.checkpoint_every_epochs", 1)
    if trainer.get("num_threads") is not None:
        _int_at_least(trainer["num_threads"], "trainer.num_threads", 1)
    _require(
        trainer["precision"] in PRECISIONS,
        f"trainer.precision must be one of {', '.join(PRECISIONS)} (got {trainer['precision']!r})",
    )
    _require(
        trainer.get("channels_last", "auto") in SWITCHES,
        f"trainer.channels_last must be auto, true or false (got {trainer.get('channels_last')!r})",
    )
    _require(
        isinstance(trainer.get("compile", False), bool),
        f"trainer.compile must be true or false (got {trainer.get('compile')!r})",
    )
    act_name, act_params = split_group(cfg["activation"])
    try:
        make_activation(act_name, **act_params)
        check_model_params(cfg["model"]["arch"], activation=act_name, **model_params(cfg))
        init_name, init_params = split_group(cfg["init"])
        inits.check_init_params(init_name, **init_params)
        ds_name, ds_params = split_group(cfg["dataset"])
        datasets.validate_dataset_params(ds_name, **ds_params)
        check_telemetry_params(**(cfg.get("telemetry") or {}))
        check_diagnose_params(**(cfg.get("diagnose") or {}))
    except ValueError as err:
        raise UserError(str(err)) from None
    return resolve_device(trainer["device"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Prepared:
    """A validated config turned into objects: the data, and the initialized model on its device."""

    device: torch.device
    precision: str  # resolved: fp32 | bf16
    data: datasets.DeviceDataset
    model: nn.Module  # the module itself: state dicts, telemetry hooks
    activation: nn.Module
    init_name: str
    init_params: dict[str, Any]  # the init group's hparams
    init_batch: torch.Tensor  # the CPU batch handed to data-dependent inits (LSUV)
    init_report: Any
    channels_last: bool = False  # resolved: feed image batches in channels_last layout
    train_model: nn.Module | None = None  # what the loop calls: ``model``, or its compiled form


def prepare(cfg: Mapping[str, Any]) -> Prepared:
    """Validate ``cfg``, load its dataset onto the device, build the model and initialize it.

    Weights are drawn on the CPU from the run's seed, so they are the same on every device.

    Raises:
        UserError: a bad config value, missing or corrupt data, or an impossible model.
    """
    device = validate(cfg)
    trainer = cfg["trainer"]
    if trainer.get("num_threads"):
        torch.set_num_threads(trainer["num_threads"])
    # The fast path where it is safe: bf16 autocast and channels_last convs on CUDA.
    precision = trainer["precision"]
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    elif precision == "bf16" and device.type != "cuda":
        log.warning("trainer.precision=bf16 needs CUDA; running in fp32 on %s", device)
        precision = "fp32"
    channels_last = trainer.get("channels_last", "auto")
    if channels_last == "auto":
        channels_last = device.type == "cuda" and cfg["model"]["arch"] == "cnn"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    seed = cfg["seed"]
    seed_everything(seed)
    ds_name, ds_params = split_group(cfg["dataset"])
    act_name, act_params = split_group(cfg["activation"])
    init_name, init_params = split_group(cfg["init"])
    try:
        data = datasets.load_dataset(
            ds_name, root=cfg["data_dir"], device=device, seed=seed, **ds_params
        )
        model = build_model(
            cfg["model"]["arch"],
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            activation=act_name,
            activation_params=act_params,
            **model_params(cfg),
        )
        activation = make_activation(act_name, **act_params)
        init_batch = data.sample_batch(
            min(INIT_BATCH, len(data.train_y)), generator=torch.Generator().manual_seed(seed)
        )[0].cpu()
        init_report = inits.init_module(
            model,
            init_name,
            activation=activation,
            data=init_batch,
            generator=torch.Generator().manual_seed(seed),
            **init_params,
        )
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if trainer.get("compile", False) else model
    return Prepared(
        device, precision, data, model, activation, init_name, init_params, init_batch,
        init_report, channels_last, train_model,
    )  # fmt: skip


# ----------------------------------------------------------------------------- run directory


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


def make_sinks(
    cfg: Mapping[str, Any], run_dir: Path, *, resume_step: int | None, wandb_id: str | None
) -> list[Sink]:
    """The sinks the ``logger`` group switches on (absent key = off)."""
    sinks: list[Sink] = []
    logger = cfg.get("logger") or {}
    if "tensorboard" in logger:
        tb_dir = run_dir / logger["tensorboard"]["subdir"]
        sinks.append(TensorBoardSink(tb_dir, purge_step=resume_step))
    if "wandb" in logger:
        wb = logger["wandb"]
        sinks.append(
            WandbSink(
                run_dir=run_dir,
                project=wb["project"],
                entity=wb.get("entity"),
                mode=wb.get("mode"),
                group=wb.get("group"),
                tags=wb.get("tags"),
                name=cfg["run_name"],
                config=cfg,
                run_id=wandb_id,
            )
        )
    return sinks


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], int | None]]:
    """Turn SIGTERM/SIGINT into a polled flag, so training stops at a step boundary and saves.

    Yields a function returning the signal number received (None if none). A second SIGINT
    stops at once (KeyboardInterrupt). Outside the main thread, signals are left alone.
    """
    received: list[int] = []

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        log.warning("%s received: stopping after this step", signal.Signals(signum).name)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to the run directory {run_dir}: {err}") from None


def run(
    cfg: Mapping[str, Any],
    run_dir: str | Path,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    choices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one benchmark in ``run_dir`` (resuming from its checkpoint if it has one) and write
    ``config.yaml``, ``checkpoint.pt``, ``metrics.jsonl``, ``weights.npz`` and ``summary.json``.
    Returns the summary.

    Raises:
        UserError: a bad config value, missing/corrupt data, an unwritable run directory or a
            checkpoint from another config, before any training.
        Interrupted: SIGTERM/SIGINT arrived; the state was saved first.
    """
    run_dir = Path(run_dir)
    validate(cfg)
    _check_writable(run_dir)
    # From here on a SIGTERM/SIGINT (even during loading) stops the run after its next step,
    # with a checkpoint; a second Ctrl-C stops at once.
    with stop_on_signals() as received_signal:
        return _run(dict(cfg), run_dir, make_optimizer, choices, received_signal)


def _run(
    cfg: dict[str, Any],
    run_dir: Path,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    choices: Mapping[str, Any] | None,
    received_signal: Callable[[], int | None],
) -> dict[str, Any]:
    trainer = cfg["trainer"]
    ckpt = None
    old_summary = read_json(run_dir / "summary.json") or {}
    if cfg.get("resume", True):
        status = old_summary.get("status")
        done = (old_summary.get("epochs_completed") or 0) >= trainer["epochs"]
        if status == "diverged" or (status == "finished" and done):
            log.info("run %s is already %s; nothing to do", run_dir, status)
            return old_summary
        ckpt = load_checkpoint(run_dir)
        if ckpt is not None:
            changes = config_changes(ckpt["config"], cfg)
            _require(
                not changes,
                f"{run_dir} holds a checkpoint of a different config ({'; '.join(changes)}); "
                f"use another run directory or resume=false to start over",
            )
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    try:
        make_optimizer([torch.zeros(1, requires_grad=True)])  # bad lr etc., before loading data
    except (ValueError, TypeError) as err:
        raise UserError(f"optimizer: {err}") from None
    try:
        prep = prepare(cfg)
    except UserError as err:  # missing data, impossible shapes: recorded for sweeps and reports
        write_json_atomic(
            run_dir / "summary.json",
            {"status": "failed", "error": str(err), "run_name": cfg.get("run_name")},
        )
        raise
    model, data, device = prep.model, prep.data, prep.device
    if ckpt is None:  # a fresh start: samples of the initial weights, for the report
        record_weights(run_dir, "init", model)
    optimizer = make_optimizer(model.parameters())
    seed = cfg["seed"]
    data_gen = torch.Generator().manual_seed(seed + 1)
    state = TrainState()
    wandb_id = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState.from_state_dict(ckpt["train_state"])
        data_gen.set_state(ckpt["data_generator"])
        random.setstate(ckpt["python_rng"])
        np.random.set_state(ckpt["numpy_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        wandb_id = ckpt.get("wandb_run_id")
        log.info("resuming %s from epoch %d, step %d", run_dir, state.epoch, state.global_step)

    ds_name = cfg["dataset"]["name"]
    act_name = cfg["activation"]["name"]
    summary: dict[str, Any] = {
        "status": "running",
        "run_name": cfg.get("run_name"),
        "init_scheme": inits.resolve(prep.init_name),
        "choices": {
            "init": prep.init_name,
            "model": cfg["model"].get("name", cfg["model"]["arch"]),
            "dataset": ds_name,
            "activation": act_name,
            "optimizer": (choices or {}).get("optimizer", type(optimizer).__name__.lower()),
            "seed": seed,
            "experiment": cfg.get("experiment_name"),
        },
        "device": str(device),
        "n_params": sum(p.numel() for p in model.parameters()),
        "num_classes": prep.data.num_classes,
        "init_report": prep.init_report,
    }
    sink = MultiSink(
        make_sinks(
            cfg, run_dir, resume_step=state.global_step + 1 if ckpt else None, wandb_id=wandb_id
        )
    )
    summary["wandb_run_id"] = sink.wandb_run_id
    write_json_atomic(run_dir / "summary.json", summary)
    log.info(
        "run %s: %s on %s (%d params), init %s, activation %s, device %s",
        cfg.get("run_name"), summary["choices"]["model"], ds_name, summary["n_params"],
        prep.init_name, act_name, device,
    )  # fmt: skip

    def checkpoint(st: TrainState) -> None:
        save_checkpoint(
            run_dir,
            {
                "config": cfg,
                "train_state": st.state_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "data_generator": data_gen.get_state(),
                "python_rng": random.getstate(),
                "numpy_rng": np.random.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "wandb_run_id": sink.wandb_run_id,
                "wall_s": wall_before + time.perf_counter() - start,
            },
        )
        write_metrics(st)

    def write_metrics(st: TrainState) -> None:
        with open(run_dir / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in st.history)

    every = trainer.get("checkpoint_every_epochs", 1)

    def epoch_end(st: TrainState) -> None:
        if st.epoch % every == 0 or st.epoch == trainer["epochs"]:
            checkpoint(st)

    telemetry = build_telemetry(
        cfg.get("telemetry"), model, sink,
        steps_per_epoch=data.num_batches("train", trainer["batch_size"]),
    )  # fmt: skip
    start = time.perf_counter()
    wall_before = (ckpt.get("wall_s") or 0.0) if ckpt is not None else 0.0
    try:
        if ckpt is None:  # a fresh start: the step-0 signal-propagation report first
            step0_report(cfg, prep, run_dir, sink)
        state = train(
            prep.train_model,
            data,
            optimizer,
            epochs=trainer["epochs"],
            batch_size=trainer["batch_size"],
            eval_batch_size=trainer["eval_batch_size"],
            precision=prep.precision,
            channels_last=prep.channels_last,
            generator=data_gen,
            state=state,
            sink=sink,
            observer=telemetry,
            on_epoch_end=epoch_end,
            should_stop=lambda: received_signal() is not None,
        )
        if state.status == "interrupted":
            checkpoint(state)
    except BaseException as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {err}")
        _write_summary_quietly(run_dir, summary)
        sink.finish()
        raise
    write_metrics(state)  # also the epochs since the last checkpoint (a diverged run)
    summary.update(
        status=state.status,
        epochs_completed=state.epoch,
        global_step=state.global_step,
        final=state.final,
        best_val_acc=state.best_val_acc,
        diverged_at_step=state.diverged_at_step,
        wall_s=wall_before + time.perf_counter() - start,
    )
    if state.status == "interrupted":
        signum = received_signal() or signal.SIGTERM
        if signum == signal.SIGTERM:
            sink.mark_preempting()  # W&B requeues a preempted sweep run that exits non-zero
        write_json_atomic(run_dir / "summary.json", summary)
        sink.finish()
        raise Interrupted(signum, run_dir)
    record_weights(run_dir, "final", model)  # next to the initial samples in weights.npz
    sink.log_summary(
        {k: summary[k] for k in ("status", "epochs_completed", "best_val_acc", "diverged_at_step")}
    )
    sink.finish()
    write_json_atomic(run_dir / "summary.json", summary)
    log.info(
        "%s after %d epochs: best val acc %s; run directory %s",
        state.status, state.epoch, summary["best_val_acc"], run_dir,
    )  # fmt: skip
    return summary


def _write_summary_quietly(run_dir: Path, summary: dict[str, Any]) -> None:
    """Record a failure if the disk lets us; never mask the original error."""
    try:
        write_json_atomic(run_dir / "summary.json", summary)
    except OSError as err:
        log.error("could not write %s: %s", run_dir / "summary.json", err)
