"""A run cannot take the machine: its memory is estimated from the config before anything is
allocated, and a run that cannot fit is refused in one line, recorded as failed."""

from __future__ import annotations

import json
import time

import pytest
import torch
from hydra.utils import instantiate

from helpers import compose_dict, run_train_cli
from initbench.build import check_memory, estimate_run_memory
from initbench.errors import UserError
from initbench.memory import available_memory, meminfo_available, optimizer_state_copies
from initbench.run import run

SMALL = ["dataset=circles", "trainer.device=cpu", "logger=tensorboard", "trainer.epochs=1"]
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "overrides, copies",
    [
        (["optimizer=adam"], 2),
        (["optimizer=adam", "+optimizer.amsgrad=true"], 3),
        (["optimizer=sgd"], 1),  # momentum 0.9
        (["optimizer=sgd", "optimizer.momentum=0"], 0),
    ],
)
def test_optimizer_state_is_read_from_the_optimizer_config(overrides, copies):
    cfg = compose_dict(SMALL + overrides)
    assert optimizer_state_copies(cfg["optimizer"]) == copies
    estimate = estimate_run_memory(cfg)
    assert estimate.parameters == estimate.gradients
    assert estimate.optimizer_state == copies * estimate.parameters


def test_the_estimate_counts_parameters_activations_and_data():
    cfg = compose_dict(
        SMALL + ["model.widths=[64,32]", "trainer.batch_size=50", "diagnose.at_start=false"]
    )
    estimate = estimate_run_memory(cfg)
    params = (2 * 64 + 64) + (64 * 32 + 32) + (32 * 2 + 2)
    assert estimate.parameters == 4 * params
    # Per example: the input, then Linear, ReLU and Dropout (0.2) outputs per layer, logits.
    assert estimate.activations == 50 * 4 * (2 + 3 * (64 + 32) + 2)
    assert estimate.batch == "train"
    assert estimate.data == (300 + 100) * (4 * 2 + 8)  # float32 inputs, int64 labels
    report = estimate_run_memory(compose_dict(SMALL + ["diagnose.batch_size=200"]))
    assert report.batch == "report" and report.batch_size == 200


def test_a_limit_below_the_estimate_is_refused_in_one_line():
    cfg = compose_dict(SMALL + ["optimizer=sgd", "trainer.memory_limit_gb=1e-6"])
    with pytest.raises(UserError) as err:
        check_memory(cfg, CPU)
    message = str(err.value)
    assert message.startswith("this run needs about ")
    assert "SGD state" in message and "more than trainer.memory_limit_gb=1e-06" in message
    assert "\n" not in message
    cfg["trainer"]["memory_limit_gb"] = 1.0
    assert check_memory(cfg, CPU).total < 1e9


def test_the_limit_is_the_free_memory_when_not_set(monkeypatch):
    import initbench.build as build_module

    cfg = compose_dict(SMALL)
    monkeypatch.setattr(build_module, "available_memory", lambda device: 10**6)
    with pytest.raises(UserError, match=r"more than the 0\.001 GB available on cpu"):
        check_memory(cfg, CPU)
    monkeypatch.setattr(build_module, "available_memory", lambda device: None)  # unknown: MPS
    check_memory(cfg, CPU)


def test_a_huge_model_is_refused_at_once_with_a_failed_summary(tmp_path):
    cfg = compose_dict(SMALL + ["model.depth=100000000"])
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"more than 20000 modules.*reduce model\.depth=100000000"):
        run(cfg, tmp_path, make_optimizer=instantiate(cfg["optimizer"]))
    # before: 23.6 GB and minutes of model building; now milliseconds (plus, in a fresh
    # process, the seconds torch.optim takes to import torch._dynamo on its first use)
    assert time.perf_counter() - start < 30
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "more than 20000 modules" in summary["error"]
    # A width whose weight has more than 2**63 elements cannot even be built on meta.
    cfg = compose_dict(SMALL + ["model.width=100000000000"])
    with pytest.raises(UserError, match=r"cannot be built at this size.*model\.width=10{11}"):
        run(cfg, tmp_path / "wide", make_optimizer=instantiate(cfg["optimizer"]))


def test_cli_refuses_a_width_of_1e7_in_one_line(tmp_path):
    proc = run_train_cli(f"hydra.run.dir={tmp_path}", *SMALL, "model.width=10000000")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("initbench: error:")]
    assert len(errors) == 1 and "this run needs about" in errors[0]
    assert "trainer.memory_limit_gb" in errors[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] in errors[0]


def test_meminfo_available_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   21000000 kB\n")
    assert meminfo_available(meminfo) == 21000000 * 1024
    assert meminfo_available(tmp_path / "missing") is None
    assert available_memory(CPU) is None or available_memory(CPU) > 0


@pytest.mark.cuda
def test_cuda_limit_is_the_devices_free_memory():
    device = torch.device("cuda")
    free, total = torch.cuda.mem_get_info(device)
    assert 0 < available_memory(device) <= total
    cfg = compose_dict(["dataset=circles", "trainer.device=cuda", "model.width=1000000"])
    with pytest.raises(UserError, match="available on cuda"):
        check_memory(cfg, device)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "model", [["model=mlp", "model.width=2048", "model.depth=4"], ["model=cnn", "model.depth=6"]]
)
def test_the_estimate_bounds_the_real_peak_on_cuda(tmp_path, model):
    """The estimate (from the meta-device measurement) is at least what a real run allocates:
    the step-0 report, training and evaluation, whole dataset on the device."""
    dataset = ["dataset=gaussian", "dataset.dim=3072"] if model[0] == "model=mlp" else []
    data = ["dataset=cifar10", f"data_dir={tmp_path / 'data'}", "dataset.download=false"]
    if not dataset:
        from helpers import write_cifar

        write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=200, n_test=100)
    cfg = compose_dict(
        [*(dataset or data), *model, "trainer.device=cuda", "trainer.precision=fp32",
         "trainer.epochs=1", "trainer.batch_size=256", "logger=[]", "telemetry.enabled=false"]
    )  # fmt: skip
    estimate = estimate_run_memory(cfg)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    summary = run(cfg, tmp_path / "run", make_optimizer=instantiate(cfg["optimizer"]))
    peak = torch.cuda.max_memory_allocated() - before
    assert summary["status"] == "finished"
    assert peak <= estimate.total, (peak, estimate)
