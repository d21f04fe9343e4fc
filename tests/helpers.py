"""What the tests share: paths, composing the real config, small data files, and running a
command in a child process with a timeout that explains a hang.

Import from here (``from helpers import ...``); conftest.py holds only fixtures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from initbench.config import register_resolvers
from initbench.data import cifar10 as cifar_module

register_resolvers()  # as the entry points do: run_name uses ${choice:...}

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# Small, fast settings for an end-to-end CPU run.
CPU_OVERRIDES = [
    "dataset=circles",
    "trainer.epochs=3",
    "trainer.batch_size=64",
    "trainer.device=cpu",
    "logger=tensorboard",
]


def compose_dict(overrides: Sequence[str] | None = None, config_name: str = "train") -> dict:
    """Compose conf/<config_name>.yaml with ``overrides`` and resolve it to a plain dict."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    return OmegaConf.to_container(cfg, resolve=True)


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files in conf/<group>/)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _py2_str(value: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle writes it: SHORT_BINSTRING or BINSTRING, raw bytes."""
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + len(value).to_bytes(4, "little") + value


def _py2_int(value: int) -> bytes:
    """BININT1 / BININT2 / BININT, as Python 2 writes small ints."""
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + value.to_bytes(2, "little")
    return b"J" + value.to_bytes(4, "little", signed=True)


def _py2_list(items: list[bytes]) -> bytes:
    return b"]q\x00(" + b"".join(items) + b"e"  # EMPTY_LIST, BINPUT, MARK, items, APPENDS


def _py2_array(data: np.ndarray) -> bytes:
    """An ndarray as Python 2's numpy pickles it: ``_reconstruct(ndarray, (0,), 'b')``, then
    ``__setstate__((1, shape, dtype('u1'), False, <str of the raw bytes>))``."""
    data = np.ascontiguousarray(data)
    order, code = data.dtype.str[0].encode(), data.dtype.str[1:].encode()  # "|", "u1"
    dtype = (
        b"cnumpy\ndtype\n"
        + _py2_str(code) + b"K\x00K\x01\x87R"  # dtype('u1', 0, 1)
        + b"(K\x03" + _py2_str(order) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )  # fmt: skip
    shape = b"(" + b"".join(_py2_int(n) for n in data.shape) + b"t"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n" + b"K\x00\x85" + _py2_str(b"b") + b"\x87R"
        + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(data.tobytes()) + b"tb"
    )  # fmt: skip


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """One CIFAR-10 batch file byte for byte as the real ones were written: a Python 2
    ``cPickle`` (protocol 2) of a dict whose keys and strings are Python 2 ``str`` (BINSTRING,
    which Python 3 decodes as ASCII unless told ``encoding="bytes"``), the images a numpy array
    pickled by Python 2's numpy."""
    entries = {
        b"batch_label": _py2_str(path.name.encode()),
        b"labels": _py2_list([_py2_int(int(y)) for y in labels]),
        b"data": _py2_array(np.asarray(data)),
        b"filenames": _py2_list([_py2_str(f"img_{i}.png".encode()) for i in range(len(labels))]),
    }
    body = b"".join(_py2_str(key) + value for key, value in entries.items())
    path.write_bytes(b"\x80\x02}q\x00(" + body + b"u.")  # PROTO 2, EMPTY_DICT, SETITEMS, STOP


def write_cifar(folder: Path, n_per_batch=20, n_test=10, seed=0) -> tuple[np.ndarray, list]:
    """Write a small CIFAR-10 in the genuine ``cifar-10-batches-py`` format into ``folder``;
    returns the training images (N, 3, 32, 32) and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for name in [*cifar_module.TRAIN_FILES, cifar_module.TEST_FILE]:
        n = n_test if name == cifar_module.TEST_FILE else n_per_batch
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        # distinct brightness per channel, so a wrong channel order would show
        images[:, :1024] //= 4
        labels = [int(v) for v in rng.integers(0, 10, n)]
        write_cifar_batch(folder / name, images, labels)
        if name != cifar_module.TEST_FILE:
            train.append((images, labels))
    images = np.concatenate([x for x, _ in train]).reshape(-1, 3, 32, 32)
    return images, [y for _, ys in train for y in ys]


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment: W&B offline and quiet unless ``env`` says otherwise (a value of
    None removes the variable)."""
    merged = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


# Children started by the current test; conftest's autouse fixture kills any left running when
# the test ends (a test that fails half-way must not leave a training process behind).
STARTED: list[subprocess.Popen] = []


def kill_leftovers() -> None:
    """Kill the current test's children that are still running."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def start(args: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs):
    """``python -X faulthandler *args`` from the repository root, pipes open (Popen)."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", *args],
        cwd=kwargs.pop("cwd", ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(env),
        **kwargs,
    )
    STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for ``proc``. Past ``timeout`` it gets SIGABRT, which faulthandler turns into every
    thread's Python stack on its stderr, and the test fails showing that stack."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        command = " ".join(map(str, proc.args[3:]))
        pytest.fail(
            f"`python {command}` still running after {timeout:g} s; its Python stacks:\n"
            f"{err[-8000:]}",
            pytrace=False,
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run ``python *args`` (a script path first) to the end; see :func:`finish` for a hang."""
    return finish(start(args, env=env, cwd=cwd), timeout)


def run_train_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python src/train.py *args``."""
    return run_cli("src/train.py", *args, **kwargs)
