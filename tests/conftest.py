"""Shared fixtures: compose the real Hydra config and shrink it for a 2-core CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)

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


def write_fake_cifar(root: Path, per_batch: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """Write a small CIFAR-10 in the genuine ``cifar-10-batches-py`` pickle format."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f)
    return folder
