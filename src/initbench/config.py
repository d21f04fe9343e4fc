"""The run config: one schema of types and ranges, one check, and the Hydra glue.

Every default lives once, in the YAML under ``conf/`` next to its one-line comment (the
scheme and dataset groups mirror their registries, which hold the library's defaults; a test
pins the two equal). What YAML cannot say — each field's type and valid range, and which keys
exist at all — lives here, in :data:`SCHEMA` and in the registries that the group nodes name
(init, dataset, activation, optimizer). :func:`check_config` walks a composed config against
both before any data is loaded, and refuses:

- an unknown key anywhere, ``+key=...`` included, with a "did you mean" when a near name exists;
- a missing key;
- a value of the wrong type or out of range,

always as one line, ``<field> must be ... (got ...)``, raised as :class:`UserError`.

Why a schema checked after composition rather than dataclasses in Hydra's ConfigStore: the
group options (schemes with their own hparams, four datasets, any model) differ in
their fields, so a structured config would need one dataclass per option, repeating what the
registries already declare; and Hydra adds ``+key`` overrides even to structured configs. One
check of the composed dict covers both, and a notebook calling :func:`initbench.run.run` with a
plain dict gets the same errors as the command line.
"""

from __future__ import annotations

import difflib
import glob
import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method
from omegaconf import OmegaConf

from initbench import data as datasets
from initbench import inits
from initbench.checkpoint import RESUMABLE_CHANGES, config_changes
from initbench.errors import UserError
from initbench.fields import BOOL, POSITIVE, STR, Field, Int
from initbench.io import read_yaml, safe_name
from initbench.lock import in_use
from initbench.models import check_model_params
from initbench.models.activations import get_activation, list_activations
from initbench.telemetry.stats import MAX_BINS

# The fixed part of the config. A nested mapping is a node; ``None`` marks a group node whose
# fields come from a registry (see GROUP_CHECKS).
SCHEMA: dict[str, Any] = {
    "seed": Int(0),
    "data_dir": STR,
    "experiment_name": STR,
    "run_name": STR,
    "resume": BOOL,
    "model": None,
    "dataset": None,
    "init": None,
    "activation": None,
    "optimizer": None,
    "logger": {
        "wandb": {
            "_target_": STR,
            "_partial_": BOOL,
            "project": STR,
            "entity": Field("str", nullable=True),
            "mode": Field("choice", choices=("online", "offline", "disabled"), nullable=True),
            "group": Field("str", nullable=True),
            "tags": Field("str_list"),
        },
        "tensorboard": {"_target_": STR, "_partial_": BOOL, "subdir": STR},
    },
    "trainer": {
        "epochs": POSITIVE,
        "batch_size": POSITIVE,
        "eval_batch_size": POSITIVE,
        "holdout": Int(0),
        "device": STR,  # resolved and checked by initbench.build.resolve_device
        "precision": Field("choice", choices=("auto", "fp32", "bf16")),
        "channels_last": Field("choice", choices=("auto", True, False)),
        "compile": BOOL,
        "num_threads": Int(1, nullable=True),
        "checkpoint_every_epochs": POSITIVE,
        "memory_limit_gb": Field("real", low=0, low_open=True, nullable=True),
    },
    "telemetry": {
        "enabled": BOOL,
        "every_n_steps": Int(1, nullable=True),
        "every_n_epochs": Int(1, nullable=True),
        "histograms": BOOL,
        "bins": Field("int", low=1, high=MAX_BINS),
    },
    "diagnose": {
        "at_start": BOOL,
        "batch_size": POSITIVE,
        "samples": POSITIVE,
        "dtype": Field("choice", choices=("float32", "float64")),
        "jacobian": BOOL,
    },
}
# Nodes that may be absent, as may each of their keys: logger=[] (no sinks) leaves no logger node.
OPTIONAL_NODES = {"logger"}


def _fail(field: str, spec: str, value: Any) -> UserError:
    return UserError(f"{field} must be {spec} (got {value!r})")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def field_named(key: str) -> str:
    """The config field ``key`` most likely means: itself, or the one field whose last part it
    is (``epochs`` -> ``trainer.epochs``)."""
    fields: list[str] = []

    def walk(node: Mapping[str, Any], path: str) -> None:
        for name, value in node.items():
            full = _join(path, name)
            if isinstance(value, dict):
                walk(value, full)
            fields.append(full)

    walk(SCHEMA, "")
    if key in fields:
        return key
    matches = [f for f in fields if f.rsplit(".", 1)[-1] == key]
    return matches[0] if len(matches) == 1 else key


def _check_keys(
    path: str, node: Any, valid: Sequence[str], *, required: bool = True, optional=()
) -> None:
    """Unknown keys are refused (with a near name if there is one); missing ones too."""
    where = path or "the config"
    if not isinstance(node, Mapping):
        raise _fail(where, "a mapping of " + ", ".join(valid), node)
    for key in node:
        if key not in valid:
            near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
            nested = field_named(str(key)) if not path else str(key)  # epochs: trainer.epochs
            suggestion = _join(path, near[0]) if near else nested if nested != key else None
            hint = f"did you mean {suggestion}? " if suggestion else ""
            raise UserError(
                f"{_join(path, key)} is not a config field; {hint}valid fields of {where}: "
                f"{', '.join(valid)}"
            )
    missing = [k for k in valid if k not in node and k not in optional]
    if required and missing:
        raise UserError(f"{where} is missing {', '.join(_join(path, k) for k in missing)}")


def _check_node(path: str, node: Any, schema: Mapping[str, Any], *, required: bool = True) -> None:
    _check_keys(path, node, list(schema), required=required, optional=OPTIONAL_NODES)
    for key, spec in schema.items():
        if key not in node:
            continue
        field, value = _join(path, key), node[key]
        if spec is None:
            GROUP_CHECKS[key](value)
        elif isinstance(spec, Mapping):
            _check_node(field, value, spec, required=key not in OPTIONAL_NODES)
        elif not spec.accepts(value):
            raise _fail(field, spec.describe(), value)


def _split(group: str, node: Any, names: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """``{"name": n, **params}`` -> ``(n, params)``; an unknown name lists the valid ones."""
    if not isinstance(node, Mapping) or "name" not in node:
        raise _fail(group, f"a mapping with a name (one of {', '.join(names)})", node)
    params = dict(node)
    name = params.pop("name")
    if name not in names:
        raise _fail(f"{group}.name", f"one of {', '.join(names)}", name)
    return name, params


def _check_model(node: Any) -> None:
    """``_target_`` (an importable nn.Module class or factory), ``name`` (its label), and the
    builder's own arguments (:func:`initbench.models.check_model_params`)."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise _fail("model", "a mapping with _target_ (an nn.Module class or factory)", node)
    if not STR.accepts(node.get("name")):
        raise _fail("model.name", "a string (the model's label in run names and reports)",
                    node.get("name"))  # fmt: skip
    params = {k: v for k, v in node.items() if k not in ("_target_", "name")}
    try:
        check_model_params(node["_target_"], params)
    except ValueError as err:
        raise UserError(str(err)) from None


def _check_init(node: Any) -> None:
    names = [*inits.list_inits(), *inits.list_aliases()]
    name, params = _split("init", node, names)
    scheme = inits.get_init(name)
    _check_keys("init", params, list(scheme.hparams))
    try:
        inits.validate_hparams(scheme, params)
    except ValueError as err:
        raise UserError(f"init.{err}") from None


def _check_dataset(node: Any) -> None:
    name, params = _split("dataset", node, datasets.list_datasets())
    spec = datasets.get_dataset_params(name)
    _check_keys("dataset", params, list(spec))
    for key, value in params.items():
        if not spec[key].accepts(value):
            raise _fail(f"dataset.{key}", spec[key].describe(), value)


def _check_activation(node: Any) -> None:
    name, params = _split("activation", node, list_activations())
    act = get_activation(name)
    _check_keys("activation", params, list(inspect.signature(act.build).parameters))
    for key, value in params.items():
        spec = (act.fields or {}).get(key, Field("real"))
        if not spec.accepts(value):
            raise _fail(f"activation.{key}", spec.describe(), value)


def _check_optimizer(node: Any) -> None:
    """Keys: Hydra's ``_target_``/``_partial_`` and the optimizer class's own arguments."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise _fail("optimizer", "a mapping with _target_ (a torch.optim class)", node)
    try:
        target = get_method(node["_target_"])
    except Exception:
        target = node["_target_"]
        raise _fail("optimizer._target_", "an importable optimizer class", target) from None
    args = [p for p in inspect.signature(target).parameters if p not in ("self", "params")]
    _check_keys("optimizer", node, ["_target_", "_partial_", *args], required=False)
    for key, value in node.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(f"optimizer.{key}", "a finite number", value)


GROUP_CHECKS: dict[str, Callable[[Any], None]] = {
    "model": _check_model,
    "dataset": _check_dataset,
    "init": _check_init,
    "activation": _check_activation,
    "optimizer": _check_optimizer,
}


def check_config(cfg: Mapping[str, Any]) -> None:
    """Check a composed run config against the schema and the registries.

    Raises:
        UserError: an unknown or missing key, or a value of the wrong type or out of range;
            the message names the field and what would be valid.
    """
    _check_node("", cfg, SCHEMA)
    telemetry = cfg["telemetry"]
    if telemetry["every_n_steps"] is None and telemetry["every_n_epochs"] is None:
        raise UserError(
            "telemetry.every_n_steps or telemetry.every_n_epochs must be set (got null for "
            "both); or turn snapshots off with telemetry.enabled=false"
        )


# What the members of a pack may differ in (with what follows from them: the run name): the
# command line's init/init.*/seed, a sweep's packable parameters, run_pack's check.
PACK_MEMBER_KEYS = ("init", "seed")


def is_pack_member_key(key: str) -> bool:
    """Whether an override of ``key`` (``init``, ``init.std``, ``seed``) may differ in a pack."""
    return key.lstrip("+~").split(".")[0] in PACK_MEMBER_KEYS


# The pack node of conf/pack.yaml (initbench.cli.pack): the members, and how many at once.
PACK_SCHEMA: dict[str, Any] = {
    "inits": Field("str_list"),
    "seeds": Field("int_list", low=0),
    "members": Field("str_list", nullable=True),
    "dirs": Field("str_list", nullable=True),
    "max_members": Int(1, nullable=True),
}


def check_pack_config(cfg: Mapping[str, Any]) -> None:
    """Check conf/pack.yaml's composed config: the ``pack`` node, then the rest as a run's.

    Raises:
        UserError: as :func:`check_config`; and ``pack.dirs`` whose length is not the
            number of members.
    """
    if "pack" not in cfg:
        raise UserError("pack is missing from the config (compose conf/pack.yaml)")
    pack = cfg["pack"]
    _check_node("pack", pack, PACK_SCHEMA)
    check_config({k: v for k, v in cfg.items() if k != "pack"})
    members = pack["members"]
    n = len(pack["inits"]) * len(pack["seeds"]) if members is None else len(members)
    if pack["dirs"] is not None and len(pack["dirs"]) != n:
        raise UserError(
            f"pack.dirs must list one run directory per member ({n}) (got {len(pack['dirs'])})"
        )


# ----------------------------------------------------------------------------- Hydra glue

# The config folder: the repository's conf/ (an editable install, as scripts/setup.sh makes),
# or $INITBENCH_CONF_DIR.
CONF_DIR = Path(os.environ.get("INITBENCH_CONF_DIR", Path(__file__).resolve().parents[2] / "conf"))
# The config each entry point composes, by program name (src/<name>.py, initbench-<name>).
ENTRY_CONFIGS = {"train": "train", "diagnose": "diagnose", "pack": "pack"}


def wandb_run_dir(default: str) -> str:
    """The run directory: under a W&B sweep agent, one fixed folder per W&B run id.

    A preempted sweep run is requeued with the same run id; a fixed folder lets the restarted
    process find its checkpoint and resume. Elsewhere, ``default`` (time-stamped).
    """
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if sweep and run:
        return f"outputs/wandb-sweeps/{safe_name(sweep)}/{safe_name(run)}"
    return default


def run_dir(root: str, stamp: str, name: str, *, _root_: Any) -> str:
    """``hydra.run.dir`` of train.py: ``<root>/<stamp>-<name>`` (``stamp`` the date and time,
    ``name`` the run's name), except that

    - under a W&B sweep agent it is the agent run's fixed folder (:func:`wandb_run_dir`);
    - with ``resume: true`` (the default), the newest folder ``<root>/*/<time>-<name>`` of an
      earlier run of this same config (:func:`initbench.checkpoint.config_changes` finds no
      difference a resume forbids, nor in ``trainer.epochs``: a longer run is another run
      here, extended only by naming its folder) that no process holds now: so running an
      interrupted command again resumes it, and running a finished one again says it is done.

    ``_root_``: the composed config (OmegaConf passes it), whose job part is compared with
    each candidate folder's config.yaml.
    """
    default = wandb_run_dir(f"{root}/{stamp}-{name}")
    if default != f"{root}/{stamp}-{name}":  # a W&B agent's run
        return default
    try:
        job = OmegaConf.to_container(
            OmegaConf.masked_copy(_root_, [k for k in _root_ if k != "hydra"]), resolve=True
        )
    except Exception:  # a bad value: let the run report it, in a fresh folder
        return default
    if not job.get("resume", True):
        return default
    found = previous_run(Path(root), stamp.rsplit("/", 1)[-1], name, job)
    return str(found) if found is not None else default


# What may differ between a run and the same command run again (run_dir): a resume's changes
# but trainer.epochs (the command asked for as many epochs as before).
SAME_RUN = tuple(k for k in RESUMABLE_CHANGES if k != "trainer.epochs")


def previous_run(root: Path, time_stamp: str, name: str, job: Mapping[str, Any]) -> Path | None:
    """The newest ``root/<date>/<time>-<name>`` holding a run of ``job``'s config (see
    :func:`run_dir`) that no process holds; ``time_stamp`` is this run's time part, which
    gives the length of the others'."""
    suffix = f"-{name}"
    candidates = [
        p for p in root.glob(f"*/*{glob.escape(suffix)}")
        if p.name[len(time_stamp):] == suffix and (p / "config.yaml").is_file()
    ]  # fmt: skip
    for folder in sorted(candidates, key=lambda p: (p.parent.name, p.name), reverse=True):
        old = read_yaml(folder / "config.yaml")
        same = isinstance(old, Mapping) and not config_changes(old, job, SAME_RUN)
        if same and not in_use(folder):
            return folder
    return None


def choice(group: str, default: str) -> str:
    """The option picked for config group ``group`` in this Hydra run (``init=normal_std10`` ->
    ``normal_std10``), so run names tell apart two variants of one scheme; ``default`` where no
    Hydra app runs (the compose API: tests, sweep checks, notebooks), which has no choices."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get(group) or default
    return default


def yaml_fields(path: Path, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, value, comment)`` of every commented ``key: value`` line of a conf/ YAML
    file, in file order (nesting from the indentation); the defaults list, ``hydra:`` and
    ``_target_``/``_partial_`` left out."""
    fields, parents = [], []  # parents: (indent, key) of the open mappings
    skip_below = None  # indent of a skipped section (defaults:, hydra:, a text block)
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")):
            continue
        indent = len(line) - len(line.lstrip())
        if skip_below is not None and indent > skip_below:
            continue
        skip_below = None
        key, _, rest = stripped.partition(":")
        value, _, comment = rest.partition(" #")
        value = value.strip()
        while parents and parents[-1][0] >= indent:
            parents.pop()
        if not indent and key in ("defaults", "hydra") or value in ("|", "|-", ">"):
            skip_below = indent
            continue
        if not value:  # a mapping opens
            parents.append((indent, key))
            continue
        if key.startswith("_"):
            continue
        dotted = ".".join([*(k for _, k in parents), key])
        fields.append((prefix + dotted, value, comment.strip()))
    return fields


def help_fields(config_name: str = "train") -> str:
    """The fields of ``conf/<config_name>.yaml`` and of its groups' default options, one line
    each with its default and its comment (which gives the range): what ``--help`` lists
    (``hydra.help.template``: ``${help_fields:}``). ``$`` doubled for Hydra's template."""
    sections = _help_sections(config_name)
    width = min(40, max(len(f"{k} = {v}") for _, rows in sections for k, v, _ in rows))
    lines = []
    for title, rows in sections:
        if title and rows:
            lines += ["", title]
        lines += [f"  {f'{k} = {v}':<{width}}  # {c}" if c else f"  {k} = {v}" for k, v, c in rows]
    return "\n".join(lines).replace("$", "$$")


def _help_sections(config_name: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``(title, fields)`` per file :func:`help_fields` lists: the config's own, then its
    groups' default options; a config that extends another (diagnose.yaml, pack.yaml:
    ``[train, _self_]``) lists that one's, then its own fields."""
    path = CONF_DIR / f"{config_name}.yaml"
    raw = OmegaConf.load(path)
    groups = []
    for entry in raw.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            return [*_help_sections(entry), (f"{config_name}.yaml's own fields", yaml_fields(path))]
        if not OmegaConf.is_dict(entry):
            continue
        for group, option in entry.items():
            for name in option if OmegaConf.is_list(option) else [option]:
                if name is not None:
                    groups.append((group, name))
    return [("", yaml_fields(path))] + [
        (f"{group}={name} (other options: conf/{group}/)",
         yaml_fields(CONF_DIR / group / f"{name}.yaml", prefix=f"{group}."))
        for group, name in groups
    ]  # fmt: skip


def target_name(target: str | None) -> str:
    """A model's default label: the last part of its ``_target_`` (``mynets.TinyConvNet`` ->
    ``TinyConvNet``), ``custom`` while none is set."""
    return str(target).rsplit(".", 1)[-1] if target else "custom"


def register_resolvers() -> None:
    """Make the project's resolvers available to configs (idempotent). ``${safe:${run_name}}``
    is :func:`initbench.io.safe_name`: a name made one path component, so a run name such as
    ``../../x`` cannot put the run directory outside ``outputs/``; ``${help_fields:}`` is
    :func:`help_fields` (``--help``); ``${target_name:${model._target_}}`` is
    :func:`target_name` (the label of conf/model/custom.yaml)."""
    resolvers = (
        ("wandb_run_dir", wandb_run_dir),
        ("run_dir", run_dir),
        ("choice", choice),
        ("safe", safe_name),
        ("help_fields", help_fields),
        ("target_name", target_name),
    )
    for name, resolver in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
