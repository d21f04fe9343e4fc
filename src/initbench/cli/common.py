"""What the entry points share: the Hydra app around a task, and one line per user error."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from initbench.config import CONF_DIR, ENTRY_CONFIGS, register_resolvers
from initbench.errors import UserError


def fail(err: UserError) -> NoReturn:
    """Bad input: one line on stderr, exit code 2."""
    print(f"initbench: error: {err}", file=sys.stderr)
    sys.exit(2)


def hydra_app(task: Callable[[DictConfig], None], program: str) -> Callable[[], None]:
    """``task`` as a Hydra app composing the config of ``program`` (config.ENTRY_CONFIGS).
    An output folder that cannot be written is one line, before Hydra tries to create it."""
    register_resolvers()
    main = hydra.main(
        config_path=str(CONF_DIR), config_name=ENTRY_CONFIGS[program], version_base="1.3"
    )

    def app() -> None:
        check_output_dir(sys.argv[1:])
        main(task)()

    return app


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
