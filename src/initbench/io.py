"""Small file helpers shared by the run, the checkpoint, the sweep runner and the report."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import stat
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


# What a file a run or a sweep reads back may be (summary.json, config.yaml, diagnose.json,
# metrics.jsonl, the sweep's index and sweep file): a regular file of at most MAX_RUN_FILE bytes
# whose JSON or YAML nests at most MAX_NESTING levels and holds at most MAX_NODES values. A run
# writes a few kB to a few MB; anything else is a damaged or hostile file, refused in one line.
MAX_RUN_FILE = 64 * 2**20
MAX_NESTING = 64
MAX_NODES = 1_000_000


class UnreadableFile(ValueError):
    """A run file that exists but cannot be used; the message says why, naming the file."""


def read_run_file(path: Path, max_bytes: int = MAX_RUN_FILE) -> str:
    """The text of ``path``, a regular file of at most ``max_bytes`` bytes.

    Never blocks and never reads without bound: a FIFO, a device (``/dev/zero``), a folder or
    a file that grows past the cap is refused, whatever a symlink points at.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        UnreadableFile: not a regular file, too big, not UTF-8, or unreadable.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UnreadableFile(f"{path.name} cannot be opened ({err.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{path.name} is not a regular file")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise UnreadableFile(f"{path.name} is over {max_bytes // 2**20} MiB")
    except OSError as err:
        raise UnreadableFile(f"{path.name} cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile(f"{path.name} is not UTF-8 text") from None


def check_shape(value: Any, what: str) -> Any:
    """``value`` (parsed JSON or YAML) if it nests at most MAX_NESTING levels and holds at most
    MAX_NODES values (shared YAML aliases counted each time they are reached); else
    UnreadableFile naming ``what``."""
    stack, nodes = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if depth > MAX_NESTING:
            raise UnreadableFile(f"{what} nests deeper than {MAX_NESTING} levels")
        if nodes > MAX_NODES:
            raise UnreadableFile(f"{what} holds more than {MAX_NODES} values")
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return value


def parse_json(text: str, what: str) -> Any:
    """``json.loads`` that refuses, as UnreadableFile naming ``what``, invalid JSON and JSON
    nested too deeply (instead of a RecursionError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnreadableFile(f"{what} nests deeper than {MAX_NESTING} levels") from None
    except ValueError as err:
        raise UnreadableFile(f"{what} is not valid JSON ({err})") from None
    return check_shape(value, what)


def load_json(path: Path) -> Any:
    """The JSON in the run file ``path`` (:func:`read_run_file`, :func:`check_shape`).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        UnreadableFile: why it cannot be used.
    """
    return parse_json(read_run_file(path), Path(path).name)


def load_yaml(path: Path) -> Any:
    """The YAML in the run file ``path`` (safe loader; :func:`read_run_file`,
    :func:`check_shape`).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        UnreadableFile: why it cannot be used.
    """
    name = Path(path).name
    try:
        value = yaml.safe_load(read_run_file(path))
    except RecursionError:
        raise UnreadableFile(f"{name} nests deeper than {MAX_NESTING} levels") from None
    except yaml.YAMLError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnreadableFile(f"{name} is not valid YAML ({reason})") from None
    return check_shape(value, name)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or cannot be used (being written, not a
    regular file, too big, nested too deeply: :func:`load_json`)."""
    try:
        return load_json(path)
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> Any:
    """The YAML in ``path`` (safe loader), or None when it is missing or cannot be used
    (:func:`load_yaml`)."""
    try:
        return load_yaml(path)
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines run file (``metrics.jsonl``) that are JSON objects of a sane
    shape; other lines (half-written, a list, a string, nested too deeply) are skipped. An
    absent file has no rows.

    Raises:
        UnreadableFile: not a regular file, or over MAX_RUN_FILE bytes.
    """
    try:
        text = read_run_file(path)
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = parse_json(line, Path(path).name)
        except UnreadableFile:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


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


def open_log(path: Path) -> IO:
    """``path`` opened for appending text, never through a symlink: a link planted in its
    place is removed and a fresh file started, as a rename would replace it (``O_NOFOLLOW``
    makes the check and the open one step)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if not Path(path).is_symlink():
            raise
        Path(path).unlink()  # the link, not its target
        fd = os.open(path, flags | os.O_EXCL, 0o644)
    return os.fdopen(fd, "a")


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
