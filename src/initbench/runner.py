"""One benchmark run from a resolved config dict: validate, load, build, initialize, train, record.

``train.py`` composes the config with Hydra and hands this module plain values; a notebook
can call :func:`run` with a dict of the same shape (see ``conf/train.yaml``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from initbench import data as datasets
from initbench import inits
from initbench.engine import train
from initbench.models import build_model, check_model_params, make_activation
from initbench.telemetry import MultiSink, Sink, TensorBoardSink, WandbSink

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
MODEL_KEYS = ("depth", "width", "widths", "dropout", "channels", "norm", "bias")
LSUV_BATCH = 256  # examples handed to data-dependent initializers


class UserError(Exception):
    """Bad input from the user (config values, missing data): reported without a traceback."""


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
        index = device.index or 0
        count = torch.cuda.device_count()
        _require(index < count, f"trainer.device={name!r} but only {count} CUDA devices exist")
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
    if trainer.get("num_threads") is not None:
        _int_at_least(trainer["num_threads"], "trainer.num_threads", 1)
    _require(
        trainer["precision"] in PRECISIONS,
        f"trainer.precision must be one of {', '.join(PRECISIONS)} (got {trainer['precision']!r})",
    )
    act_name, act_params = split_group(cfg["activation"])
    try:
        make_activation(act_name, **act_params)
        check_model_params(cfg["model"]["arch"], activation=act_name, **model_params(cfg))
        init_name, init_params = split_group(cfg["init"])
        inits.check_init_params(init_name, **init_params)
        ds_name, ds_params = split_group(cfg["dataset"])
        datasets.validate_dataset_params(ds_name, **ds_params)
    except ValueError as err:
        raise UserError(str(err)) from None
    return resolve_device(trainer["device"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temp file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint_atomic(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temp file, fsync and rename: a kill never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_sinks(cfg: Mapping[str, Any], run_dir: Path) -> list[Sink]:
    """The sinks the ``logger`` group switches on (absent key = off)."""
    sinks: list[Sink] = []
    logger = cfg.get("logger") or {}
    if "tensorboard" in logger:
        sinks.append(TensorBoardSink(run_dir / logger["tensorboard"]["subdir"]))
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
            )
        )
    return sinks


def run(
    cfg: Mapping[str, Any],
    run_dir: str | Path,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    choices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one benchmark and write ``config.yaml``, ``checkpoint.pt``, ``metrics.jsonl`` and
    ``summary.json`` into ``run_dir``. Returns the summary.

    Raises:
        UserError: a bad config value or missing/corrupt data, before any training.
    """
    run_dir = Path(run_dir)
    device = validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = cfg["trainer"]
    if trainer.get("num_threads"):
        torch.set_num_threads(trainer["num_threads"])
    precision = trainer["precision"]
    if precision == "bf16" and device.type != "cuda":
        log.warning("trainer.precision=bf16 needs CUDA; running in fp32 on %s", device)
        precision = "fp32"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(cfg), sort_keys=False))

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
        # Weights are drawn on the CPU from the run's seed: the same on every device.
        init_gen = torch.Generator().manual_seed(seed)
        batch_x, _ = data.sample_batch(
            min(LSUV_BATCH, len(data.train_y)), generator=torch.Generator().manual_seed(seed)
        )
        init_report = inits.init_module(
            model,
            init_name,
            activation=make_activation(act_name, **act_params),
            data=batch_x.cpu(),
            generator=init_gen,
            **init_params,
        )
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None

    model.to(device)
    optimizer = make_optimizer(model.parameters())
    data_gen = torch.Generator().manual_seed(seed + 1)
    choices = dict(choices or {})
    summary: dict[str, Any] = {
        "status": "running",
        "run_name": cfg.get("run_name"),
        "init_scheme": inits.resolve(init_name),
        "choices": {
            "init": init_name,
            "model": cfg["model"].get("name", cfg["model"]["arch"]),
            "dataset": ds_name,
            "activation": act_name,
            "optimizer": choices.get("optimizer", type(optimizer).__name__.lower()),
            "seed": seed,
            "experiment": cfg.get("experiment_name"),
        },
        "device": str(device),
        "n_params": sum(p.numel() for p in model.parameters()),
        "init_report": init_report,
    }
    write_json_atomic(run_dir / "summary.json", summary)
    log.info(
        "run %s: %s on %s (%d params), init %s, activation %s, device %s",
        cfg.get("run_name"),
        summary["choices"]["model"],
        ds_name,
        summary["n_params"],
        init_name,
        act_name,
        device,
    )

    def checkpoint(epoch: int, step: int) -> None:
        save_checkpoint_atomic(
            run_dir / "checkpoint.pt",
            {
                "epoch": epoch,
                "global_step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "data_generator": data_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
        )

    sink = MultiSink(make_sinks(cfg, run_dir))
    start = time.perf_counter()
    try:
        result = train(
            model,
            data,
            optimizer,
            epochs=trainer["epochs"],
            batch_size=trainer["batch_size"],
            eval_batch_size=trainer["eval_batch_size"],
            precision=precision,
            generator=data_gen,
            sink=sink,
            on_epoch_end=checkpoint,
        )
    except BaseException:
        summary.update(status="failed", wall_s=time.perf_counter() - start)
        write_json_atomic(run_dir / "summary.json", summary)
        sink.finish()
        raise
    summary.update(
        status=result.status,
        epochs_completed=result.epochs_completed,
        global_step=result.global_step,
        final=result.final,
        best_val_acc=result.best_val_acc,
        diverged_at_epoch=result.diverged_at_epoch,
        wall_s=time.perf_counter() - start,
    )
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in result.history)
    sink.log_summary({k: summary[k] for k in ("status", "epochs_completed", "best_val_acc")})
    sink.finish()
    write_json_atomic(run_dir / "summary.json", summary)
    log.info(
        "%s after %d epochs: best val acc %s; run directory %s",
        result.status,
        result.epochs_completed,
        summary["best_val_acc"],
        run_dir,
    )
    return summary
