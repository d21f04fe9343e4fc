"""What the entry points share: the Hydra app around a task, and one line per user error."""

from __future__ import annotations

import difflib
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import hydra
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError

from initbench.build import check_structure
from initbench.config import (
    CONF_DIR,
    ENTRY_CONFIGS,
    check_config,
    field_named,
    register_resolvers,
)
from initbench.errors import UserError


def fail(err: UserError) -> NoReturn:
    """Bad input: one line on stderr, exit code 2."""
    print(f"initbench: error: {err}", file=sys.stderr)
    sys.exit(2)


def check_run(cfg: dict) -> None:
    """A run's config before any folder exists: its fields (:func:`check_config`), then what
    needs the model's structure and the data's size (:func:`initbench.build.check_structure`)."""
    check_config(cfg)
    check_structure(cfg)


def hydra_app(
    task: Callable[[DictConfig], None],
    program: str,
    check: Callable[[dict], None] = check_run,
) -> Callable[[], None]:
    """``task`` as a Hydra app composing the config of ``program`` (config.ENTRY_CONFIGS),
    checked by ``check`` before Hydra creates the run directory. An output folder that cannot
    be written is one line, before Hydra tries to create it."""
    register_resolvers()
    main = hydra.main(
        config_path=str(CONF_DIR), config_name=ENTRY_CONFIGS[program], version_base="1.3"
    )

    def app() -> None:
        check_flags(sys.argv[1:])
        check_output_dir(sys.argv[1:])
        check_before_hydra(ENTRY_CONFIGS[program], sys.argv[1:], check)
        main(task)()

    return app


# Hydra's own command-line flags, the only ``-`` arguments an entry point passes on. Not among
# them: ``--experimental-rerun FILE``, which unpickles FILE, and which argparse would also
# match for any prefix of it (``--experiment=X``, what a W&B sweep file without ``command:``
# passes).
HYDRA_FLAGS = frozenset({
    "--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve", "--package", "-p",
    "--run", "-r", "--multirun", "-m", "--shell-completion", "-sc", "--config-path", "-cp",
    "--config-name", "-cn", "--config-dir", "-cd", "--info", "-i",
})  # fmt: skip
SWEEP_COMMAND = "command: [${env}, ${interpreter}, ${program}, ${args_no_hyphens}]"


def check_flags(argv: Sequence[str]) -> None:
    """Refuse, in one line (exit 2), a ``-`` argument that is not one of Hydra's own flags,
    before argparse sees it: ``--epochs=3`` or ``--experiment=X`` would otherwise be an argparse
    error or, as an abbreviation of ``--experimental-rerun``, unpickle the file X."""
    for arg in argv:
        name = arg.split("=", 1)[0]
        if not arg.startswith("-") or name in HYDRA_FLAGS:
            continue
        key, _, value = arg.lstrip("-").partition("=")
        hint = f" (as an override: {field_named(key)}={value or '...'})"
        fail(UserError(
            f"{name} is not an option: settings are key=value overrides{hint}; a W&B sweep "
            f"file that passes --key=value needs {SWEEP_COMMAND}"
        ))  # fmt: skip


def check_before_hydra(
    config_name: str, argv: Sequence[str], check: Callable[[dict], None] = check_config
) -> None:
    """Compose and check the config before Hydra creates the run directory, so a bad value or
    a misspelt key (``model.widht=64``, with or without ``+``) is one line (exit 2) and leaves
    no folder behind. A multirun (``-m``) is checked on every value of every swept key (each
    with the other keys' first values: one composition per value, not the whole product).
    Left to Hydra: other flags (``--help``, ...), sweeps it alone can expand (``glob``), and
    its own composition errors other than an unknown key (an unknown group option lists the
    options)."""
    flags = {arg for arg in argv if arg.startswith("-")}
    if flags - {"-m", "--multirun"}:
        return
    overrides = [arg for arg in argv if not arg.startswith("-")]
    for variant in _one_per_value(overrides) if flags else [overrides]:
        _check_composed(config_name, variant, check, multirun=bool(flags))


def _one_per_value(overrides: list[str]) -> list[list[str]]:
    """Override lists that together give every value of every swept key (``init=a,b``,
    ``seed=range(3)``) once, the other keys at their first value; none where Hydra's parser
    cannot expand a sweep alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        values = [
            [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            if o.is_sweep_override()
            else [o.input_line]
            for o in parsed
        ]
    except Exception:  # glob(...) needs the config loader; Hydra reports anything else
        return []
    base = [v[0] for v in values]
    variants = [base]
    for i, options in enumerate(values):
        variants += [base[:i] + [value] + base[i + 1 :] for value in options[1:]]
    return variants


def _check_composed(
    config_name: str,
    overrides: list[str],
    check: Callable[[dict], None] = check_config,
    multirun: bool = False,
) -> None:
    """One composition of ``overrides`` checked by ``check`` (see check_before_hydra).
    An unknown group option is refused here too, in one line with the nearest options and the
    valid ones (Hydra would print its search path, and in a multirun create the sweep folder
    first)."""
    try:
        cfg = _compose(config_name, overrides)
    except MissingConfigException as err:
        group, _, option = str(err.missing_cfg_file or "").rpartition("/")
        if err.options and group:
            near = difflib.get_close_matches(option, err.options, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(f'{group}={n}' for n in near)}? " if near else ""
            fail(UserError(
                f"{group}={option} is not an option of {group}; {hint}valid: "
                f"{', '.join(err.options)}"
            ))  # fmt: skip
        return
    except ConfigCompositionException as err:
        key = getattr(err.__cause__, "full_key", None)
        bad = [o for o in overrides if o.split("=", 1)[0] == key]
        if not (isinstance(err.__cause__, ConfigAttributeError) and bad):
            return
        # As if added with +key: the schema names it and the nearest valid key.
        overrides = [o for o in overrides if o not in bad] + [f"+{o}" for o in bad]
        try:
            cfg = _compose(config_name, overrides)
        except ConfigCompositionException:
            return
        try:
            check(cfg)
        except UserError as err:
            fail(err)
        # A valid key the composed config does not hold yet (a custom model's own argument).
        fail(UserError(f"{key} is not in the composed config yet; add it with +{bad[0]}"))
    try:
        check(cfg)
    except UserError as err:
        fail(err)


def _compose(config_name: str, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def check_output_dir(argv: Sequence[str]) -> None:
    """Refuse (one line, exit 2) an output folder that cannot be written: ``hydra.run.dir=``
    (``hydra.sweep.dir=`` with -m), else the default root (outputs/ or multirun/). The check
    writes a probe file in the deepest folder of that path that exists, and removes it."""
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith(key)]
    target = Path(given[-1] if given else "multirun" if multirun else "outputs").absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        fail(UserError(f"cannot write the run directory {target}: {err.strerror}: {existing}"))
