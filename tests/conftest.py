"""Fixtures only (shared helpers live in helpers.py): the real Hydra config, and the threads
rule every entry point uses (initbench.threads)."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import compose_dict, kill_leftovers
from initbench.threads import choose_threads

# Tests never talk to a W&B server.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# A run's default rule (the CPUs this process may use, fewer if others keep them busy), chosen
# once for the session and handed to every run and child through OMP_NUM_THREADS, so that runs
# compared bit for bit compute with one count; INITBENCH_TEST_THREADS=1 where two test
# processes share the CPUs (scripts/mutation.sh).
choose_threads(int(os.environ.get("INITBENCH_TEST_THREADS") or 0) or None)
os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())


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
