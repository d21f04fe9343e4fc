"""What the entry points share: the Hydra app around a task, and one line per user error."""

from __future__ import annotations

import sys
from collections.abc import Callable
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
    """``task`` as a Hydra app composing the config of ``program`` (config.ENTRY_CONFIGS)."""
    register_resolvers()
    main = hydra.main(
        config_path=str(CONF_DIR), config_name=ENTRY_CONFIGS[program], version_base="1.3"
    )
    return main(task)
