"""Small file helpers shared by the run, the checkpoint, the sweep runner and the report."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (e.g. being written)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
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
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temp file next to ``path``; on a clean exit flush, fsync and rename it over
    ``path``, so readers never see half a file (on an error ``path`` is left as it was)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    fsync_replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temp file, fsync and rename, so readers never see half a file."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2)
