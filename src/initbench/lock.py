"""One process per run directory: an exclusive lock on ``<run_dir>/.lock``.

Two processes on one run directory would mix their files (the config of one, the checkpoint of
the other, two event files, two W&B runs). :func:`hold_run_dir` takes an advisory ``flock`` on
``.lock`` for as long as its block runs and writes the holder into the file (pid, host, start
time, command line); a second process is refused at once with a :class:`UserError` naming that
holder. The OS releases the lock when the holder exits or dies, even by ``kill -9``, so a lock
file left behind never blocks. The lock is advisory: it binds initbench processes, not ``rm``.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from initbench.errors import UserError
from initbench.io import remove_temp_files

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

log = logging.getLogger(__name__)

LOCK = ".lock"


@contextmanager
def hold_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` (which must exist) for the block, then let it go.

    Holding it, nobody else writes there, so the temp files a killed writer left are removed.
    Where the file system has no ``flock`` (Lustre mounted without ``flock``, some NFS), the
    block runs unprotected, with a warning.

    Raises:
        UserError: another process holds ``run_dir`` (its pid, host, start and command are
            named), or ``run_dir`` is not writable.
    """
    run_dir = Path(run_dir)
    try:
        # O_NOFOLLOW: a .lock that is a symlink is refused, never followed (and truncated)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise UserError(f"cannot write to the run directory {run_dir}: {err}") from None
    try:
        locked = _lock(fd, run_dir)
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_this_process()).encode(), 0)
            remove_temp_files(run_dir)
        yield
        if locked:  # still held: an empty .lock means nobody is working here
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def in_use(run_dir: str | Path) -> bool:
    """Whether another process holds ``run_dir`` now (False where there is no ``flock``)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock if this process took it
    return False


def _lock(fd: int, run_dir: Path) -> bool:
    """Take the lock without waiting: True when taken, False when the file system cannot."""
    if fcntl is None:
        log.warning("no flock on this system: nothing stops a second process on %s", run_dir)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(
            f"{run_dir} is in use by {_holder(fd)}; wait for it or use another run directory"
        ) from None
    except OSError as err:  # ENOLCK, ENOSYS, EOPNOTSUPP: a file system without flock
        log.warning("cannot lock %s (%s): nothing stops a second process on it", run_dir, err)
        return False
    return True


def _this_process() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }


def _holder(fd: int, wait_s: float = 1.0) -> str:
    """Who holds the lock, from the file (given ``wait_s`` to write it, having just taken it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = json.loads(os.pread(fd, 65536, 0))
        except ValueError:
            info = None
        if isinstance(info, dict):
            break
        if time.monotonic() > deadline:
            return "another process"
        time.sleep(0.05)
    command = info.get("command", "?")
    command = command if len(command) <= 200 else command[:197] + "..."
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
        f"(started {info.get('started', '?')}: {command})"
    )
