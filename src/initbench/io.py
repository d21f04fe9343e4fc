"""Small file helpers shared by the run, the checkpoint, the sweep runner and the report."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# Characters kept in a name that becomes a path component; each other one becomes "_". Not "="
# or ",": a run directory is handed back to Hydra as ``hydra.run.dir=<dir>`` (the local sweep,
# the resume hint), where "=" does not parse and "," makes a multirun list.
UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 120  # characters: a path component's limit is 255 bytes, and timestamps get prefixed


def safe_name(text: object, max_len: int = MAX_NAME) -> str:
    """``text`` as one safe, readable path component: ``../../x`` -> ``x``, ``a b/c`` -> ``a_b_c``.

    Letters, digits and ``._-`` are kept, every other character becomes ``_``; leading and
    trailing dots and underscores go (so no ``..``, no hidden file); a name longer than
    ``max_len`` is cut and ends with a hash of ``text``, so long names stay distinct. Never
    empty (``unnamed``) and idempotent: ``safe_name(safe_name(t)) == safe_name(t)``.
    """
    name = UNSAFE_CHAR.sub("_", str(text)).strip("._")
    if len(name) > max_len:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
        name = f"{name[: max_len - len(digest) - 1]}-{digest}"
    return name or "unnamed"


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
