"""``initbench-pack`` / ``python src/pack.py``: train several inits and seeds of one network
together (conf/pack.yaml; :mod:`initbench.run_pack`).

The command line takes train.py's overrides for everything the members share; ``pack.inits``
x ``pack.seeds`` (or ``pack.members``, one override string each) say what differs. Each member's
config is composed as ``python src/train.py <shared overrides> <member overrides>`` would
compose it, so a member is exactly the run that command would train, in its own directory.
Exit codes as train.py's: 2 for bad input, 1 for a failed run, 128 + signal after a stop.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from initbench.build import check_structure
from initbench.cli.common import fail, hydra_app
from initbench.config import CONF_DIR, PACK_MEMBER_KEYS, check_pack_config, is_pack_member_key
from initbench.errors import Interrupted, RunFailed, UserError, how_to_continue
from initbench.io import safe_name, write_json_atomic
from initbench.run_pack import run_pack
from initbench.telemetry.sinks import log_agent_run as log_agent_run_in_child

# The pack's own fields, never passed on to its members.
OWN = ("pack", "run_name", "hydra")


def member_overrides(pack: Mapping[str, Any]) -> list[list[str]]:
    """Each member's overrides: ``pack.members`` split like a shell line, else every
    ``init=<i> seed=<s>`` of ``pack.inits`` x ``pack.seeds``.

    Raises:
        UserError: an init option that does not exist, or a member override of anything but
            init and seed.
    """
    if pack["members"] is not None:
        members = [shlex.split(m) for m in pack["members"]]
    else:
        members = [[f"init={i}", f"seed={s}"] for i in pack["inits"] for s in pack["seeds"]]
    options = sorted(p.stem for p in (CONF_DIR / "init").glob("*.yaml"))
    for n, overrides in enumerate(members, start=1):
        for o in overrides:
            key, _, value = o.lstrip("+~").partition("=")
            if not is_pack_member_key(key):
                raise UserError(
                    f"pack member {n} ({' '.join(overrides)}): {key} cannot differ between "
                    f"members; a member may set only init, init.* and seed (set {key} for "
                    "the whole pack instead)"
                )
            if key == "init" and value not in options:
                raise UserError(
                    f"pack member {n}: init must be one of {', '.join(options)} (got {value!r})"
                )
    return members


def shared_overrides(task: Sequence[str]) -> list[str]:
    """The command line's overrides that every member gets (not the pack's own fields).

    Raises:
        UserError: ``init=``/``seed=`` on the command line (they are chosen per member).
    """
    shared = []
    for o in task:
        key = o.lstrip("+~").split("=", 1)[0]
        if key.split(".")[0] in OWN:
            continue
        if is_pack_member_key(key):
            raise UserError(
                f"{key} is chosen per member in a pack: use pack.inits / pack.seeds or "
                f"pack.members (got {o})"
            )
        shared.append(o)
    return shared


def member_dirs(pack_dir: Path, names: Sequence[str], overrides: Sequence[list[str]]) -> list[Path]:
    """Each member's default folder: ``<pack folder>/<run name>``; members whose run names are
    the same (variants of one init: ``init.std=0.1``, ``init.std=1``) add their overrides."""
    dirs = []
    for name, member in zip(names, overrides, strict=True):
        if names.count(name) > 1:
            # the option and seed are in the run name already; their hparams (init.std) are not
            extra = [o.replace("=", "-") for o in member if o.split("=")[0] not in PACK_MEMBER_KEYS]
            name = "__".join([name, *extra])
        dirs.append(pack_dir / safe_name(name))
    if len(set(dirs)) < len(dirs):
        raise UserError("two members of the pack are the same run; list each member once")
    return dirs


def _aliases(dirs: Sequence[Path]) -> tuple[Path, Path] | None:
    """Two entries of ``dirs`` that are one folder (``a`` and ``b/../a``, or a symlink to it)."""
    seen: dict[Path, Path] = {}
    for d in dirs:
        key = d.resolve()
        if key in seen:
            return seen[key], d
        seen[key] = d
    return None


def check(cfg: dict) -> None:
    """Before Hydra creates the pack's folder: the pack node, the shared config, and every
    member's overrides."""
    check_pack_config(cfg)
    check_structure({k: v for k, v in cfg.items() if k != "pack"})
    member_overrides(cfg["pack"])
    shared_overrides(sys.argv[1:])


def compose_member(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """A member's resolved config and group choices, as train.py would compose them (its run
    name uses its own ``init`` choice, e.g. normal_std10)."""
    cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    hydra_config = HydraConfig.instance()
    own = hydra_config.cfg
    hydra_config.set_config(cfg)  # the choice resolver reads the member's choices
    try:
        choices = dict(cfg.hydra.runtime.choices)
        plain = cfg.copy()
        with open_dict(plain):
            del plain["hydra"]
        return OmegaConf.to_container(plain, resolve=True), choices
    finally:
        hydra_config.cfg = own


def _pack(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    pack_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        pack = OmegaConf.to_container(cfg.pack, resolve=True)
        shared = shared_overrides(list(hydra_cfg.overrides.task))
        overrides = member_overrides(pack)
        members = [compose_member(shared + m) for m in overrides]
        dirs = pack["dirs"] or member_dirs(pack_dir, [c["run_name"] for c, _ in members], overrides)
        same = _aliases([Path(d) for d in dirs])
        if same:
            raise UserError(
                f"pack.dirs names one folder twice ({same[0]} and {same[1]}); list each "
                "member's folder once"
            )
        index = {
            "pack": cfg.run_name,
            "shared_overrides": shared,
            "members": [
                {"run_name": c["run_name"], "overrides": m, "run_dir": str(d)}
                for (c, _), m, d in zip(members, overrides, dirs, strict=True)
            ],
        }
        write_json_atomic(pack_dir / "pack.json", index)
        summaries = run_pack(
            [c for c, _ in members],
            dirs,
            make_optimizer=instantiate(cfg.optimizer),
            choices=[ch for _, ch in members],
            max_members=pack["max_members"],
        )
    except UserError as err:
        fail(err)
    except RunFailed as err:
        print(f"initbench: error: {err}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as stop:
        print(f"initbench: {resume_hint(stop, pack_dir)}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    for entry, summary in zip(index["members"], summaries, strict=True):
        entry.update(status=summary.get("status"), best_val_acc=summary.get("best_val_acc"))
    write_json_atomic(pack_dir / "pack.json", index)
    log_agent_run(OmegaConf.to_container(cfg, resolve=True), pack_dir, index["members"])
    print(format_outcomes(index["members"]))
    print(f"pack folder: {pack_dir}")
    if any(e["status"] == "failed" for e in index["members"]):
        sys.exit(1)


def resume_hint(stop: Interrupted, pack_dir: Path) -> str:
    """A pack's stop message: resuming means running it again in its folder (the members'
    folders are inside it), not in a member's."""
    how = f"Run the same command with hydra.run.dir={pack_dir} to continue."
    text = str(stop).replace(how_to_continue(stop.run_dir), how)
    if "hydra.run.dir=" not in text and "starts over" not in text:
        text += f" {how}"
    return text


def log_agent_run(cfg: dict, pack_dir: Path, members: Sequence[Mapping[str, Any]]) -> None:
    """Under a W&B sweep agent, the agent's own run (``$WANDB_RUN_ID``, which no member uses)
    records the pack: a table of its members and their outcomes, and in its summary how many
    finished and the best member's val accuracy, so the sweep sees its run end."""
    if not (os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID")):
        return
    node = (cfg.get("logger") or {}).get("wandb")
    if node is None:
        return
    columns = ["run_name", "status", "best_val_acc", "run_dir"]
    accs = [m["best_val_acc"] for m in members if isinstance(m.get("best_val_acc"), float)]
    summary = {
        "pack/members": len(members),
        "pack/finished": sum(m.get("status") == "finished" for m in members),
        "pack/best_val_acc": max(accs) if accs else None,
    }
    rows = [[m.get(c) for c in columns] for m in members]
    config = {k: v for k, v in cfg.items() if k != "pack"}
    log_agent_run_in_child(pack_dir, node, cfg["run_name"], config, (columns, rows), summary)


def format_outcomes(members: Sequence[Mapping[str, Any]]) -> str:
    """One line per member: run name, status, best val acc, run directory."""
    width = max(len(m["run_name"]) for m in members)
    lines = []
    for m in members:
        acc = m.get("best_val_acc")
        acc_text = f"{acc:.4f}" if isinstance(acc, float) else "-"
        lines.append(
            f"{m['run_name']:<{width}}  {m.get('status') or '-':<11} {acc_text:>7}  {m['run_dir']}"
        )
    return "\n".join(lines)


def main() -> None:
    """Train a pack; ``--help`` lists groups and fields."""
    hydra_app(_pack, "pack", check)()
