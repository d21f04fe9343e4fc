"""What runs for a combination, and the config it composes to.

:func:`build_command` fills in a sweep's ``command`` as a W&B agent does (``${env}``,
``${interpreter}``, ``${program}``, ``${args_no_hyphens}`` -> ``key=value``) and adds
``hydra.run.dir``; :func:`compose_combinations` composes each combination with the Hydra config
its program uses, so a sweep file is checked before anything runs.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from initbench.config import CONF_DIR, ENTRY_CONFIGS, register_resolvers
from initbench.sweep.combinations import Combination
from initbench.sweep.spec import Sweep, SweepError


def build_command(
    sweep: Sweep, combo: Combination, run_dir: str | Path, interpreter: str | None = None
) -> list[str]:
    """The process a W&B agent would start for ``combo``, plus ``hydra.run.dir=<run_dir>``."""
    return fill_command(sweep, sweep.program, combo.args, run_dir, interpreter)


def fill_command(
    sweep: Sweep,
    program: str,
    args: Sequence[str],
    run_dir: str | Path,
    interpreter: str | None = None,
) -> list[str]:
    """The sweep's ``command`` with its macros filled in as a W&B agent fills them
    (``${program}`` -> ``program``, ``${args_no_hyphens}`` -> ``args``), plus
    ``hydra.run.dir=<run_dir>``."""
    macros = {
        "${env}": [] if os.name == "nt" else ["/usr/bin/env"],
        "${interpreter}": [interpreter or sys.executable],
        "${program}": [program],
        "${args_no_hyphens}": list(args),
        "${args}": [f"--{a}" for a in args],
    }
    cmd: list[str] = []
    for part in sweep.command:
        if part in macros:
            cmd += macros[part]
        else:
            cmd.append(part)
    return cmd + [f"hydra.run.dir={run_dir}"]


def program_config(program: str | Path) -> tuple[Path, str]:
    """The config folder and name a program composes: ``src/train.py`` -> the ``conf/`` beside
    its ``src/`` (else the package's, config.CONF_DIR) and ``train``.

    Raises:
        SweepError: the program is not one of the project's Hydra entry points.
    """
    program = Path(program)
    name = program.stem.removeprefix("initbench-")
    if name not in ENTRY_CONFIGS:
        raise SweepError(
            f"program {program} is not an initbench entry point; valid programs: "
            f"{', '.join(f'src/{n}.py' for n in ENTRY_CONFIGS)}"
        )
    beside = program.resolve().parent.parent / "conf"
    return (beside if beside.is_dir() else CONF_DIR), ENTRY_CONFIGS[name]


def compose_combinations(
    sweep: Sweep, combos: Sequence[Combination], root: str | Path = "."
) -> Iterator[tuple[Combination, dict[str, Any] | Exception]]:
    """Compose every combination with the config its program uses, as Hydra would.

    Yields ``(combination, resolved config dict)``, or the exception when it does not compose.
    Hydra composes once per distinct set of config-group choices; each combination's plain
    ``key=value`` overrides are then applied as Hydra applies them (struct mode: a key that
    is not in the config fails), so a large grid is checked in seconds.
    """
    register_resolvers()
    config_dir, config_name = program_config(Path(root) / sweep.program)
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], Any] = {}
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for combo in combos:
            try:
                overrides = parser.parse_overrides(combo.args)
                groups = tuple(
                    o.input_line
                    for o in overrides
                    if (config_dir / o.key_or_group).is_dir() or o.key_or_group.startswith("hydra")
                )
                if groups not in composed:
                    try:
                        composed[groups] = compose(config_name=config_name, overrides=list(groups))
                    except Exception as err:  # remembered: every combination with it fails
                        composed[groups] = err
                base = composed[groups]
                if isinstance(base, Exception):
                    raise base
                cfg = copy.deepcopy(base)
                for o in overrides:
                    if o.input_line in groups:
                        continue
                    try:
                        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
                    except Exception as err:  # as Hydra words it (struct mode: no new keys)
                        chosen = " ".join(groups) or "the defaults"
                        raise SweepError(
                            f"could not override '{o.key_or_group}': not in the config "
                            f"composed from {config_name}.yaml with {chosen} ({type(err).__name__})"
                        ) from None
                yield combo, OmegaConf.to_container(cfg, resolve=True)
            except Exception as err:
                yield combo, err


def compose_by(
    sweep: Sweep,
    combos: Sequence[Combination],
    keep: Callable[[str], bool],
    root: str | Path = ".",
) -> list[dict[str, Any] | Exception]:
    """Per combination, its config composed from only the parameters ``keep`` accepts (e.g.
    the experiment and dataset keys): one composition per distinct set of those, so a dry run
    of a 918-run grid composes a handful. In ``combos`` order; an exception where it does not
    compose."""
    projected: dict[tuple, Combination] = {}
    keys = []
    for combo in combos:
        params = {k: v for k, v in combo.params.items() if keep(k)}
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        keys.append(key)
        if key not in projected:
            projected[key] = Combination(len(projected), params, f"part-{len(projected)}")
    composed = dict(
        zip(projected, (cfg for _, cfg in compose_combinations(sweep, list(projected.values()),
                                                               root=root)), strict=True)
    )  # fmt: skip
    return [composed[key] for key in keys]
