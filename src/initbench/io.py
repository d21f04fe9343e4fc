"""Small file helpers shared by the run, the checkpoint, the sweep runner and the report."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import yaml

# atomic_write's temp files: ".<name>.<pid>-<8 hex>.tmp", unique per writer, hidden from ls
TEMP_NAME = re.compile(r"\..+\.\d+-[0-9a-f]{8}\.tmp")

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


def temp_path(path: Path) -> Path:
    """A fresh temp file name next to ``path``: two writers of one file never share one."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_write(path: Path, mode: str = "w", keep_previous: Path | None = None) -> Iterator[IO]:
    """Open a temp file next to ``path``; on a clean exit flush, fsync and rename it over
    ``path``, so readers never see half a file. The temp file is this writer's own (two
    writers of one file never share one) and is removed if writing fails; ``path`` is then
    left as it was, and the error goes up as the OSError that caused it (see :func:`os_error`).
    With ``keep_previous``, the file being replaced is first renamed to it."""
    path = Path(path)
    tmp = temp_path(path)
    f = open(tmp, mode.replace("w", "x"))  # "x": created here, never another writer's
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        fsync_replace(tmp, path)
    except BaseException as err:
        with suppress(OSError):
            tmp.unlink()
        cause = os_error(err)
        if cause is not None and cause is not err:
            raise cause from err
        raise


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files :func:`atomic_write` left in ``folder`` when its process was
    killed mid-write; returns them. Only safe while nobody else writes there (the run
    directory's lock, :mod:`initbench.lock`)."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if TEMP_NAME.fullmatch(tmp.name):
            with suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


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


NONFINITE_KEY = "nonfinite"  # where to_strict_json records the non-finite values it nulled


def to_strict_json(obj: Any) -> Any:
    """``obj`` as standard JSON can hold it: NaN and +-Inf become null, numpy scalars plain
    numbers, tuples lists. When ``obj`` is a mapping and held any non-finite value, the fact
    is recorded next to them: ``"nonfinite": {"<path>": "NaN" | "Infinity" | "-Infinity"}``,
    the path being the keys (and list indices) joined by dots (``"final.val_loss"``,
    ``"val/loss"``, ``"layers.2.act_std"``)."""
    found: dict[str, str] = {}

    def plain(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, Mapping):
            return {k: plain(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v, (*path, str(i))) for i, v in enumerate(value)]
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy/torch scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            found[".".join(path)] = "NaN" if value != value else json.dumps(value)
            return None
        return value

    out = plain(obj, ())
    if found and isinstance(out, dict):
        out[NONFINITE_KEY] = found
    return out


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """:func:`to_strict_json`, then ``json.dumps`` with ``allow_nan=False``: every file a run,
    a sweep or the step-0 report writes goes through here, so each is standard JSON that
    ``JSON.parse`` and jq read."""
    return json.dumps(to_strict_json(obj), allow_nan=False, **kwargs)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write strict JSON (:func:`dumps_strict`) through a temp file, fsync and rename, so
    readers never see half a file."""
    text = dumps_strict(obj, indent=2)
    with atomic_write(path) as f:
        f.write(text)
