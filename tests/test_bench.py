"""The benchmark harness (run quickly, for its keys and sane values: never timing thresholds)
and the fast path's results against the plain path."""

import json
import math
import shutil

import pytest
import torch
from hydra.utils import instantiate

from helpers import FASHION_DIR, ROOT, compose_dict, run_cli, write_cifar
from initbench.bench import grid_estimate
from initbench.build import prepare
from initbench.run import run


def test_bench_quick_produces_every_key(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("scripts/bench.py", "--quick", "--device", "cpu", "--threads", "1",
                   "--out", str(out), "model.width=32")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["meta"]["quick"] is True and result["meta"]["device"] == "cpu"
    overhead = result["telemetry_overhead"]
    assert overhead["ratio"] > 0 and overhead["step_ms_off"] > 0 and overhead["step_ms_on"] > 0
    assert overhead["steps_per_repeat"] % overhead["every_n_steps"] == 0
    cnn = result["cnn30_speedup_fast_path"]
    assert cnn["ratio"] > 0 and cnn["step_ms_eager_fp32"] > 0 and cnn["step_ms_fast"] > 0
    assert cnn["fast_path"] == {"precision": "fp32", "channels_last": True, "compile": False}
    mlp = result["mlp_epoch_speedup_vs_dataloader"]
    if FASHION_DIR.exists():
        assert mlp["ratio"] > 0 and mlp["epoch_s_ours"] > 0 and mlp["epoch_s_reference"] > 0
        assert mlp["train_examples"] == 2048
        assert math.isclose(mlp["samples_per_s_ours"] * mlp["epoch_s_ours"], 2048)
    else:
        assert mlp["ratio"] is None and "FashionMNIST not found" in mlp["skipped"]
    assert result["grid_wall_time_estimate"] is None  # quick figures are not estimates
    threads = result["threads_under_load"]
    for phase in ("quiet", "loaded"):
        arms = threads["mlp"][phase]["ms_per_step"]
        assert set(arms) == {"default", "1"} and all(v > 0 for v in arms.values())
    assert threads["ratio"] == threads["mlp"]["loaded"]["default_over_best"] > 0
    for key in (
        "telemetry_overhead",
        "mlp_epoch_speedup_vs_dataloader",
        "cnn30_speedup_fast_path",
        "threads_under_load",
    ):
        assert key in proc.stdout


def test_grid_estimate_takes_each_presets_epochs_from_the_composed_config(tmp_path):
    results = {
        "meta": {"quick": False},
        "mlp_epoch_speedup_vs_dataloader": {"ratio": 2.0, "epoch_s_ours": 6.0,
                                            "train_examples": 60_000},
        "cnn30_speedup_fast_path": {"ratio": 1.5, "batch_size": 500, "step_ms_cnn10_fast": 10.0,
                                    "step_ms_fast": 30.0},
    }  # fmt: skip
    est = grid_estimate(results, ROOT / "sweeps" / "grid.yaml")
    presets = ("fashion_mlp", "cifar_cnn", "cifar_cnn30")
    epochs = {p: compose_dict([f"experiment={p}"])["trainer"]["epochs"] for p in presets}
    assert est["epochs"] == epochs and est["not_estimated"] == []
    per_preset = est["runs"] / len(presets)  # the grid pairs every preset with the same rest
    seconds = sum(per_preset * epochs[p] * est["epoch_s"][p] * 1.07 for p in presets)
    assert est["hours"] == pytest.approx(seconds / 3600)
    # A copy of the repository whose fashion_mlp preset trains 3 epochs: the estimate follows.
    for part in ("conf", "sweeps"):
        shutil.copytree(ROOT / part, tmp_path / part)
    (tmp_path / "src").mkdir()
    shutil.copy(ROOT / "src" / "train.py", tmp_path / "src" / "train.py")
    preset = tmp_path / "conf" / "experiment" / "fashion_mlp.yaml"
    text = preset.read_text()
    assert "epochs: 10 " in text
    preset.write_text(text.replace("epochs: 10 ", "epochs: 3  "))
    moved = grid_estimate(results, tmp_path / "sweeps" / "grid.yaml")
    assert moved["epochs"] == {**epochs, "fashion_mlp": 3}
    assert moved["hours"] < est["hours"]


CNN = ["dataset=cifar10", "model=cnn", "model.depth=4", "model.channels=4", "trainer.epochs=2",
       "trainer.batch_size=16", "trainer.device=cpu", "logger=[]", "telemetry.enabled=false",
       "diagnose.at_start=false", "init=kaiming"]  # fmt: skip


def run_cnn(tmp_path, name, *overrides):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=16, n_test=16)
    cfg = compose_dict([*CNN, f"data_dir={tmp_path / 'data'}", *overrides])
    return run(cfg, tmp_path / name, make_optimizer=instantiate(cfg["optimizer"]))


def test_channels_last_matches_the_plain_layout(tmp_path):
    plain = run_cnn(tmp_path, "plain", "trainer.channels_last=false")
    fast = run_cnn(tmp_path, "fast", "trainer.channels_last=true")
    again = run_cnn(tmp_path, "again", "trainer.channels_last=true")
    assert fast["final"] == again["final"]  # the fp32 CPU path is exactly reproducible
    for key, value in plain["final"].items():
        assert fast["final"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_fast_path_defaults_resolve_per_device(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=4, n_test=4)
    prep = prepare(compose_dict([*CNN, f"data_dir={tmp_path / 'data'}"]))
    # On the CPU, "auto" means fp32 and the standard layout; on CUDA, bf16 and channels_last.
    assert (prep.precision, prep.channels_last) == ("fp32", False)
    prep = prepare(compose_dict([*CNN, f"data_dir={tmp_path / 'data'}",
                                 "trainer.channels_last=true"]))  # fmt: skip
    conv = prep.model.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


@pytest.mark.slow
def test_compiled_model_matches_eager(tmp_path):
    # No dropout: compiled code draws its random numbers differently from eager PyTorch.
    base = ["dataset=circles", "trainer.epochs=2", "trainer.device=cpu", "logger=[]",
            "telemetry.enabled=false", "diagnose.at_start=false", "model.dropout=0"]  # fmt: skip
    results = {}
    for flag in ("false", "true"):
        cfg = compose_dict([*base, f"trainer.compile={flag}"])
        results[flag] = run(cfg, tmp_path / flag, make_optimizer=instantiate(cfg["optimizer"]))
    for key, value in results["false"]["final"].items():
        assert results["true"]["final"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
