"""The build layer: a checked config turned into the objects a run, a report or a benchmark needs.

``validate`` checks a config (``initbench.config``) and resolves its device; ``prepare`` checks
that the run fits in memory (``check_memory``), loads the dataset onto the device, builds the
model and initializes it; ``make_sinks`` builds the loggers the ``logger`` group names. Tools
(``run``, ``diagnose``, ``bench``) call these and never each other's internals.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from initbench import data as datasets
from initbench import inits
from initbench.config import check_config
from initbench.errors import UserError
from initbench.memory import (
    GB,
    MemoryEstimate,
    available_memory,
    estimate_memory,
    gb,
    optimizer_state_copies,
)
from initbench.models import build_model, build_on_meta, make_activation, model_size
from initbench.telemetry import MultiSink, SinkContext
from initbench.threads import default_threads

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if present, else cpu; otherwise the named device, which must exist."""
    valid = "auto, cpu, cuda, cuda:N, mps"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"trainer.device must be one of {valid} (got {name!r})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={name!r} but CUDA is not available")
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise UserError(f"trainer.device={name!r} but only {count} CUDA devices")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"trainer.device={name!r} but MPS is missing")
    elif device.type != "cpu":
        raise UserError(f"trainer.device must be one of {valid} (got {name!r})")
    return device


def validate(cfg: Mapping[str, Any]) -> torch.device:
    """Check every user-facing value before any data is loaded; returns the resolved device."""
    check_config(cfg)
    return resolve_device(cfg["trainer"]["device"])


def group_params(node: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``{"name": n, **params}`` -> ``(n, params)`` for the init, activation and dataset groups."""
    params = dict(node)
    return params.pop("name"), params


def model_params(model: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model group's ``(target, builder arguments)``: everything but its label."""
    params = {k: v for k, v in model.items() if k not in ("name", "_target_")}
    return model["_target_"], params


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
    init_batch: tuple[torch.Tensor, torch.Tensor]  # the batch data-dependent inits get (on device)
    init_report: list[dict[str, Any]] | None  # what a data-dependent init logged (ctx.log)
    init_cost: inits.InitCost  # what the init spent: seconds, forward/backward passes, device
    channels_last: bool = False  # resolved: feed image batches in channels_last layout
    train_model: nn.Module | None = None  # what the loop calls: ``model``, or its compiled form


def _fast_path(
    trainer: Mapping[str, Any], device: torch.device, model: nn.Module
) -> tuple[str, bool]:
    """The resolved precision and memory layout: bf16 autocast on CUDA, and channels_last for
    a model with 2-d convolutions on CUDA."""
    precision = trainer["precision"]
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    elif precision == "bf16" and device.type != "cuda":
        log.warning("trainer.precision=bf16 needs CUDA; running in fp32 on %s", device)
        precision = "fp32"
    channels_last = trainer["channels_last"]
    if channels_last == "auto":
        convs = any(isinstance(m, nn.Conv2d) for m in model.modules())
        channels_last = device.type == "cuda" and convs
    return precision, channels_last


# The field that sets each batch of the estimate (MemoryEstimate.batch).
BATCH_FIELDS = {"train": "trainer.batch_size", "eval": "trainer.eval_batch_size",
                "report": "diagnose.batch_size"}  # fmt: skip


def memory_hint(estimate: MemoryEstimate, limit: float, model_cfg: Mapping[str, Any]) -> str:
    """What to change so that the run fits: the part that alone is over ``limit`` first."""
    sizes = [k for k in ("depth", "width", "channels") if k in model_cfg]
    if model_cfg.get("widths"):
        sizes = ["widths"]
    model = "/".join(f"model.{k}" for k in sizes) or "the model"
    if estimate.data > limit:
        return "use a smaller dataset"
    if estimate.model + estimate.data > limit:
        return f"reduce {model}"
    return f"reduce {BATCH_FIELDS[estimate.batch]} or {model}"


def init_structure(cfg: Mapping[str, Any]) -> Callable[[nn.Module], None] | None:
    """What the config's init adds to the model (:func:`initbench.inits.structure_of`)."""
    name, params = group_params(cfg["init"])
    return inits.structure_of(name, **params)


def meta_model(cfg: Mapping[str, Any]) -> nn.Module:
    """The config's model built on the ``meta`` device (no memory, no data loaded): its
    structure, for checks before anything real is built.

    Raises:
        UserError: bad dataset parameters, or a model that cannot be built for the data.
    """
    ds_name, ds_params = group_params(cfg["dataset"])
    act_name, act_params = group_params(cfg["activation"])
    target, params = model_params(cfg["model"])
    try:
        shape = datasets.dataset_shape(ds_name, **ds_params)
        return build_on_meta(
            target, input_shape=shape.input_shape, num_classes=shape.num_classes,
            activation=act_name, activation_params=act_params, adapt=init_structure(cfg),
            **params,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None


def check_holdout(holdout: int, n_train: int, dataset: str) -> None:
    """``trainer.holdout`` leaves training examples to train on; ValueError naming it if not."""
    if holdout >= n_train:
        raise ValueError(
            f"trainer.holdout must be smaller than the {n_train} training examples of "
            f"{dataset} (got {holdout})"
        )


def check_structure(cfg: Mapping[str, Any]) -> None:
    """What the config check cannot see without the model's structure and the data's size,
    checked before an entry point creates any folder: the model builds (on the ``meta``
    device) for the dataset's shape — a CNN's stride-2 stages, TAT's depth, a user's network —
    and ``trainer.holdout`` is smaller than the training split.

    Raises:
        UserError: one line naming the field.
    """
    meta_model(cfg)
    ds_name, ds_params = group_params(cfg["dataset"])
    try:
        check_holdout(
            cfg["trainer"]["holdout"], datasets.dataset_shape(ds_name, **ds_params).n_train, ds_name
        )
    except ValueError as err:
        raise UserError(str(err)) from None


def estimate_run_memory(cfg: Mapping[str, Any]) -> MemoryEstimate:
    """The run's peak memory (see :mod:`initbench.memory`), from the config and the dataset's
    and model's shapes alone: nothing is loaded or built.

    Raises:
        ValueError: bad dataset parameters, or a model that cannot be built for the data.
    """
    ds_name, ds_params = group_params(cfg["dataset"])
    data = datasets.dataset_shape(ds_name, **ds_params)
    check_holdout(cfg["trainer"]["holdout"], data.n_train, ds_name)
    target, params = model_params(cfg["model"])
    size = model_size(
        target, input_shape=data.input_shape, num_classes=data.num_classes,
        adapt=init_structure(cfg), **params,
    )  # fmt: skip
    trainer, report = cfg["trainer"], cfg["diagnose"]
    return estimate_memory(
        size,
        data,
        optimizer_copies=optimizer_state_copies(cfg["optimizer"]),
        batch_size=trainer["batch_size"],
        eval_batch_size=trainer["eval_batch_size"],
        report_batch=report["batch_size"] if report["at_start"] else None,
        report_value_bytes=8 if report["dtype"] == "float64" else 4,
    )


def memory_limit(cfg: Mapping[str, Any], device: torch.device) -> tuple[float | None, str, str]:
    """The memory a run may use: ``trainer.memory_limit_gb``, or when that is null the memory
    free on ``device`` (None where that cannot be told, e.g. MPS); with its wording and fix."""
    limit_gb = cfg["trainer"]["memory_limit_gb"]
    if limit_gb is not None:
        fix = "or raise trainer.memory_limit_gb if the estimate is too high"
        return limit_gb * GB, f"trainer.memory_limit_gb={limit_gb:g}", fix
    limit = available_memory(device)
    against = "unknown" if limit is None else f"the {gb(limit)} available on {device}"
    return limit, against, "or set trainer.memory_limit_gb if the estimate is too high"


def check_memory(
    cfg: Mapping[str, Any], device: torch.device, members: int = 1, datasets: int = 1
) -> MemoryEstimate:
    """Refuse a run (or a pack of ``members`` runs over ``datasets`` distinct datasets) whose
    estimate exceeds ``trainer.memory_limit_gb``, or when that is null, the memory free on
    ``device`` (unchecked where that cannot be told, e.g. MPS).

    Raises:
        UserError: one line naming the estimate by part, the limit and what to change.
    """
    try:
        estimate = estimate_run_memory(cfg).packed(members, datasets)
    except ValueError as err:
        raise UserError(str(err)) from None
    limit, against, fix = memory_limit(cfg, device)
    if limit is None or estimate.total <= limit:
        log.info("estimated peak memory %s, limit %s", gb(estimate.total), against)
        return estimate
    optimizer = str(cfg["optimizer"]["_target_"]).rsplit(".", 1)[-1]
    what = "this run" if members == 1 else f"this pack of {members} members"
    hint = memory_hint(estimate, limit, cfg["model"])
    if members > 1:
        hint = f"use fewer members (pack.max_members) or {hint}"
    raise UserError(
        f"{what} needs about {gb(estimate.total)} ({estimate.describe(optimizer)}), more "
        f"than {against}; {hint}, {fix}"
    )


def max_pack_members(cfg: Mapping[str, Any], device: torch.device, datasets: int = 1) -> int:
    """How many runs of ``cfg`` fit in one pack within the memory limit (at least 1; a run
    that does not fit alone is refused later by :func:`check_memory`)."""
    limit, _, _ = memory_limit(cfg, device)
    if limit is None:
        return 2**31
    one = estimate_run_memory(cfg)
    per_member = one.total - one.data
    return max(1, int((limit - datasets * one.data) // max(per_member, 1)))


def load_data(cfg: Mapping[str, Any], device: torch.device) -> datasets.DeviceDataset:
    """The config's dataset, whole on ``device``, with ``trainer.holdout`` training examples
    moved to a holdout split when it is set.

    Raises:
        UserError: missing or corrupt data files, bad dataset parameters.
    """
    ds_name, ds_params = group_params(cfg["dataset"])
    try:
        data = datasets.load_dataset(
            ds_name, root=cfg["data_dir"], device=device, seed=cfg["seed"], **ds_params
        )
        holdout = cfg["trainer"]["holdout"]
        return data.hold_out(holdout) if holdout else data
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None


def prepare(
    cfg: Mapping[str, Any],
    data: datasets.DeviceDataset | None = None,
    check: bool = True,
) -> Prepared:
    """Validate ``cfg``, check that the run fits in memory, load its dataset onto the device,
    build the model and initialize it.

    Weights are drawn on the CPU from the run's seed, so they are the same on every device; a
    data-dependent init then runs on the device, on a training batch with its labels.
    ``data``: the config's dataset, already loaded (a pack's members share it); ``check=False``
    skips the memory check (a pack checks its members together).

    Raises:
        UserError: a bad config value, a run too big for the memory, missing or corrupt
            data, or an impossible model.
    """
    device = validate(cfg)
    if check:
        check_memory(cfg, device)  # before anything is allocated
    trainer = cfg["trainer"]
    # null: the CPUs this process may really use (initbench.threads), not less under load:
    # the init and the step-0 report compute the same on a busy machine; training's count is
    # chosen from the load just before it starts (run.start_threads)
    torch.set_num_threads(trainer["num_threads"] or default_threads()[0])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    seed = cfg["seed"]
    seed_everything(seed)
    act_name, act_params = group_params(cfg["activation"])
    init_name, init_params = group_params(cfg["init"])
    if data is None:
        data = load_data(cfg, device)
    try:
        target, params = model_params(cfg["model"])
        model = build_model(
            target,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            activation=act_name,
            activation_params=act_params,
            **params,
        )
        activation = make_activation(act_name, **act_params)
        init_batch = data.sample_batch(
            min(inits.get_init(init_name).examples, len(data.train_y)),
            generator=torch.Generator().manual_seed(seed),
        )
        with inits.measure_cost(model, device) as init_cost:
            init_report = inits.init_module(
                model,
                init_name,
                activation=activation,
                data=init_batch,
                generator=torch.Generator().manual_seed(seed),
                device=device,
                **init_params,
            )
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    model = model.to(device)
    precision, channels_last = _fast_path(trainer, device, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = torch.compile(model) if trainer["compile"] else model
    return Prepared(
        device, precision, data, model, activation, init_name, init_params, init_batch,
        init_report, init_cost, channels_last, train_model,
    )  # fmt: skip


def make_sinks(
    cfg: Mapping[str, Any],
    run_dir: Path,
    *,
    resume_step: int | None = None,
    wandb_id: str | None = None,
    packed: bool = False,
) -> MultiSink:
    """The sinks the ``logger`` group switches on, each built from its node by Hydra
    (``_target_`` names a factory in :mod:`initbench.telemetry.sinks`, ``_partial_`` leaves it
    the run's :class:`SinkContext` to take)."""
    ctx = SinkContext(Path(run_dir), cfg["run_name"], cfg, resume_step, wandb_id, packed)
    loggers = cfg.get("logger") or {}  # logger=[] composes no node: no sinks
    return MultiSink([instantiate(node)(ctx) for node in loggers.values()])
