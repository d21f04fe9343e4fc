"""Shared fixtures: compose the real Hydra config and shrink it for a 2-core CPU."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from initbench.config import register_resolvers
from initbench.data import cifar10 as cifar_module

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)
register_resolvers()  # as the entry points do: run_name uses ${choice:...}

# Small, fast settings for an end-to-end CPU run.
CPU_OVERRIDES = [
    "dataset=circles",
    "trainer.epochs=3",
    "trainer.batch_size=64",
    "trainer.device=cpu",
    "logger=tensorboard",
]


def compose_dict(overrides: list[str] | None = None) -> dict:
    """Compose conf/train.yaml with ``overrides`` and resolve it to a plain dict."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides or []))
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def compose_cfg():
    return compose_dict


def group_options(group: str) -> list[str]:
    """The option names of a config group (the YAML files in conf/<group>/)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    """One CIFAR-10 batch file: a Python-2 pickle of a dict with bytes keys, as the real ones."""
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


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


def run_train_cli(*args: str, env: dict | None = None, timeout: float = 300):
    """Run ``python src/train.py *args`` from the repository root (W&B offline by default)."""
    return subprocess.run(
        [sys.executable, "src/train.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )
