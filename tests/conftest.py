"""Fixtures only (shared helpers live in helpers.py): the real Hydra config, and settings for a
2-core CPU."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import compose_dict, kill_leftovers

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# 2 torch threads for 2 cores; INITBENCH_TEST_THREADS=1 where two test processes share them
# (scripts/mutation.sh).
torch.set_num_threads(int(os.environ.get("INITBENCH_TEST_THREADS", "2")))


@pytest.fixture
def compose_cfg():
    return compose_dict


@pytest.fixture(autouse=True)
def no_leftover_children():
    """A test that fails half-way leaves no child process running (helpers.start)."""
    yield
    kill_leftovers()
