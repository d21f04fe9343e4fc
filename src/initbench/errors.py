"""The two ways a run stops early on purpose: bad input, and a signal.

Entry points turn :class:`UserError` into one line (``initbench: error: ...``, exit 2) and
:class:`Interrupted` into exit code 128 + the signal number, so a W&B agent or SLURM requeues it.
"""

from __future__ import annotations

import signal
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (config values, missing data): reported without a traceback."""


class Interrupted(Exception):
    """The run was stopped by a signal, after saving a checkpoint (or, ``message`` says, before
    training started: nothing to save); exit with 128 + signum."""

    def __init__(self, signum: int, run_dir: Path, message: str | None = None) -> None:
        self.signum = signum
        super().__init__(
            message
            or f"stopped by {signal.Signals(signum).name}; checkpoint saved in {run_dir}. "
            f"Run the same command with hydra.run.dir={run_dir} to continue."
        )
