"""Small file helpers shared by the run, the checkpoint, the sweep runner and the report."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (e.g. being written)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> Any:
    """The YAML in ``path`` (safe loader), or None when it is missing or unreadable."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None


def fsync_replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path`` and fsync the folder, so the rename survives a crash."""
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def atomic_write(path: Path, mode: str = "w", rotate_to: Path | None = None) -> Iterator[IO]:
    """Open a temp file next to ``path``; on a clean exit flush, fsync and rename it over
    ``path``, so readers never see half a file. On an error (a full disk) the temp file is
    removed and ``path`` is left as it was; the error goes up as the OSError that caused it
    (see :func:`os_error`). ``rotate_to``: the old ``path`` is kept there (a previous
    checkpoint) before the new one takes its place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = os_error(err)
        if cause is not None and cause is not err:
            raise cause from err
        raise
    if rotate_to is not None and path.exists():
        os.replace(path, rotate_to)
    fsync_replace(tmp, path)


def os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err``: itself, or one it was raised while handling (torch.save
    turns a full disk into a RuntimeError about zip positions, with the OSError as context)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temp file, fsync and rename, so readers never see half a file."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2)
