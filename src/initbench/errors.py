"""How a run stops early: bad input, a failure it recorded, and a signal.

Entry points turn :class:`UserError` into one line (``initbench: error: ...``, exit 2),
:class:`RunFailed` into one line and exit 1, and :class:`Interrupted` into exit code 128 + the
signal number, so a W&B agent or SLURM requeues it.
"""

from __future__ import annotations

import signal
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (config values, missing data): reported without a traceback."""


class RunFailed(Exception):
    """The run could not go on (a full disk, a vanished folder) and recorded why in its
    summary.json; reported as one line, exit code 1."""


def how_to_continue(run_dir: Path) -> str:
    """What a stopped run's message says to resume it: train.py's default run directory is the
    newest folder of an earlier run of the same config (initbench.config.run_dir)."""
    return (
        f"Run the same command again to continue: it finds this folder (the newest run of this "
        f"config), or name it with hydra.run.dir={run_dir}."
    )


class Interrupted(Exception):
    """The run was stopped by a signal; exit with 128 + signum.

    ``saved``: a checkpoint of this moment was written (a second Ctrl-C stops at once instead,
    and the run continues from its last checkpoint). ``message``, when given, says it all (a
    stop before training started: nothing to save).
    """

    def __init__(
        self, signum: int, run_dir: Path, saved: bool = True, message: str | None = None
    ) -> None:
        self.signum, self.run_dir = signum, run_dir
        name = signal.Signals(signum).name
        if saved:
            what = f"stopped by {name}; checkpoint saved in {run_dir}."
        else:
            what = f"stopped at once by a second {name}; nothing saved since the last checkpoint."
        super().__init__(message or f"{what} {how_to_continue(run_dir)}")
