"""Fixtures only (shared helpers live in helpers.py): the real Hydra config, and the threads
rule every entry point uses (initbench.threads)."""

from __future__ import annotations

import os

# isort: off
# initbench before torch: it sets OpenMP's passive wait policy, which OpenMP reads when torch
# loads it (the tests' children inherit it).
import initbench  # noqa: F401
import pytest
import torch

# isort: on

from helpers import compose_dict, kill_leftovers
from initbench.threads import default_threads

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# The CPUs this process may use, as a run's default; INITBENCH_TEST_THREADS=1 where two test
# processes share them (scripts/mutation.sh).
torch.set_num_threads(int(os.environ.get("INITBENCH_TEST_THREADS") or default_threads()[0]))


@pytest.fixture
def compose_cfg():
    return compose_dict


@pytest.fixture(autouse=True)
def no_leftover_children():
    """A test that fails half-way leaves no child process running (helpers.start)."""
    yield
    kill_leftovers()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped without a CUDA device; those marked
    ``cuda(cpu_rehearsal=True)`` run on the CPU instead when INITBENCH_CUDA_TESTS_ON_CPU=1 (the
    device check's CPU rehearsal)."""
    if torch.cuda.is_available():
        return
    rehearse = os.environ.get("INITBENCH_CUDA_TESTS_ON_CPU") == "1"
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        marker = item.get_closest_marker("cuda")
        if marker is not None and not (rehearse and marker.kwargs.get("cpu_rehearsal")):
            item.add_marker(skip)
