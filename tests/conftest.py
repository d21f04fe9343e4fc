"""Fixtures only (shared helpers live in helpers.py): the real Hydra config, and settings for a
2-core CPU."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import compose_dict

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)


@pytest.fixture
def compose_cfg():
    return compose_dict
