"""The device check's own logic (scripts/device_check.py); CI runs the whole check as a CPU
rehearsal (.ci/run), so these only pin what a rehearsal cannot see."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys

import pytest

from helpers import ROOT
from initbench import engine

spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts/device_check.py")
device_check = importlib.util.module_from_spec(spec)
sys.modules["device_check"] = device_check  # its dataclass looks itself up there
spec.loader.exec_module(device_check)


def test_every_test_file_with_cuda_tests_is_run_by_the_device_check():
    marked = sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
        if re.search(r"pytest\.mark\.cuda\b", p.read_text())
    )  # fmt: skip
    assert marked == sorted(device_check.CUDA_TEST_FILES)


def test_epoch_seconds_are_read_from_the_runs_own_epoch_lines(caplog, monkeypatch):
    """The figure comes from engine's log line, as a run prints it (format and all)."""
    import torch

    from initbench.data import load_dataset
    from initbench.models import build_model

    data = load_dataset("gaussian", root="data", n=64, n_test=32, dim=8)
    model = build_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        activation="relu", depth=2, width=8)  # fmt: skip
    with caplog.at_level(logging.INFO, logger=engine.__name__):
        engine.train(model, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
                     batch_size=16, generator=torch.Generator().manual_seed(0))  # fmt: skip
    seconds = device_check._epoch_seconds(caplog.text)
    assert len(seconds) == 2 and all(0 <= s < 60 for s in seconds)
    pack_line = "epoch 2/2: 51 member(s), val acc 0.1 0.2  (0.42 s)"
    assert device_check._epoch_seconds(pack_line) == [0.42]


@pytest.mark.parametrize("value, met", [(0.4, True), (0.6, False), (None, None)])
def test_the_targets_table_compares_each_figure_with_its_h100_target(value, met):
    results = {"epochs": {"figures": {"mlp_epoch_s": value}},
               "bench_packed": {"status": "failed", "error": "timed out"}}  # fmt: skip
    rows = {r["figure"]: r for r in device_check.targets_table(results, {})}
    assert set(rows) == set(device_check.TARGETS)
    assert rows["mlp_epoch_s"]["value"] == value and rows["mlp_epoch_s"]["met"] is met
    assert rows["packed_speedup_mlp_k51"]["value"] is None  # its part failed: no figure
