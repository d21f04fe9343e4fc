"""End to end: a short CPU run writes its summary, TensorBoard events and a W&B offline run."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import CPU_OVERRIDES, FASHION_DIR, compose_dict, run_train_cli, write_cifar
from initbench import engine
from initbench.inits import get_init, list_aliases, list_inits, resolve
from initbench.run import run

TAGS = {"train/loss", "train/acc", "val/loss", "val/acc"}


def run_in_process(tmp_path, overrides, name="run"):
    cfg = compose_dict(CPU_OVERRIDES + overrides)
    run_dir = tmp_path / name
    summary = run(cfg, run_dir, make_optimizer=instantiate(cfg["optimizer"]))
    return summary, run_dir


def scalar_tags(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


def test_short_run_writes_summary_tensorboard_and_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary, run_dir = run_in_process(
        tmp_path, ["logger=[wandb,tensorboard]", "init=kaiming", "activation=tanh"]
    )
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["status"] == "finished"
    assert on_disk["epochs_completed"] == 3
    assert set(on_disk["final"]) == {"train_loss", "train_acc", "val_loss", "val_acc"}
    assert 0.0 <= on_disk["best_val_acc"] <= 1.0
    assert on_disk["best_val_acc"] >= on_disk["final"]["val_acc"]
    assert on_disk["wall_s"] > 0
    assert on_disk["choices"] == {
        "init": "kaiming",
        "model": "mlp",
        "dataset": "circles",
        "activation": "tanh",
        "optimizer": "adam",
        "seed": 0,
        "experiment": "mlp-circles",
    }
    assert (run_dir / "config.yaml").exists() and (run_dir / "checkpoint.pt").exists()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]

    acc = scalar_tags(run_dir)
    assert TAGS <= set(acc.Tags()["scalars"])
    val_acc = acc.Scalars("val/acc")
    assert len(val_acc) == 3
    assert val_acc[-1].value == pytest.approx(on_disk["final"]["val_acc"], rel=1e-6)

    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))


def test_without_credentials_wandb_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no saved login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    summary, run_dir = run_in_process(tmp_path, ["logger=wandb", "trainer.epochs=1"])
    assert summary["status"] == "finished"
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_an_offline_run_is_quiet_and_says_once_how_to_upload_it(tmp_path):
    """W&B's own output is off (at most one ``wandb:`` line); our notice names the offline
    folder and the ``wandb sync`` command, once."""
    run_dir = tmp_path / "run"
    proc = run_train_cli(
        *CPU_OVERRIDES, "logger=wandb", "trainer.epochs=1", f"hydra.run.dir={run_dir}",
        env={"WANDB_SILENT": None, "WANDB_MODE": "offline"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert sum(line.startswith("wandb:") for line in lines) <= 1, proc.stderr
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    notices = [line for line in lines if "wandb sync" in line]
    assert len(notices) == 1 and f"`wandb sync {offline}`" in notices[0]


def test_same_seed_same_weights_and_metrics_other_seed_differs(tmp_path):
    a, dir_a = run_in_process(tmp_path, ["init=xavier"], "a")
    b, dir_b = run_in_process(tmp_path, ["init=xavier"], "b")
    c, _ = run_in_process(tmp_path, ["init=xavier", "seed=1"], "c")
    assert a["final"] == b["final"]
    assert (dir_a / "metrics.jsonl").read_text() == (dir_b / "metrics.jsonl").read_text()
    weights_a = torch.load(dir_a / "checkpoint.pt", weights_only=False)["model"]
    weights_b = torch.load(dir_b / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert c["final"] != a["final"]


def test_exploding_init_is_a_diverged_result_not_a_crash(tmp_path):
    summary, run_dir = run_in_process(tmp_path, ["init=normal", "init.std=1e30"])
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] == 0  # the very first loss is not finite
    assert summary["epochs_completed"] == 0 and summary["final"] == {}
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


def test_cnn30_trains_on_cifar10_files(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=16, n_test=8)
    summary, _ = run_in_process(
        tmp_path,
        [
            "dataset=cifar10",
            "model=cnn30",
            "model.channels=4",
            "init=kaiming",
            f"data_dir={tmp_path / 'data'}",
            "trainer.epochs=1",
            "trainer.batch_size=32",
        ],
    )
    assert summary["status"] == "finished"
    assert summary["choices"]["model"] == "cnn30"
    assert summary["global_step"] == 3  # 80 images in batches of 32


def test_cli_run_end_to_end(tmp_path):
    proc = run_train_cli(
        "dataset=circles",
        "trainer.epochs=2",
        "trainer.device=cpu",
        "logger=tensorboard",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2" in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["choices"]["init"] == "pytorch_default"


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.exists(), reason="apt-get install dataset-fashion-mnist")
def test_default_run_reaches_fashion_mnist_accuracy(tmp_path):
    """The README's main run (defaults, 2 epochs to stay quick) on the real FashionMNIST."""
    proc = run_train_cli(
        "trainer.epochs=2", f"hydra.run.dir={tmp_path}", f"data_dir={tmp_path / 'data'}"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["best_val_acc"] >= 0.85
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("init", sorted(set(list_inits()) | set(list_aliases())))
def test_every_scheme_and_alias_trains_through_the_config(tmp_path, init):
    """On the circles MLP; the schemes made for residual networks on a small ResNet."""
    model, layer = ["model.width=32"], "fc1.weight"
    if get_init(init).structure is not None:
        write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=8, n_test=8)
        model = ["model=resnet", "model.depth=8", "model.width=4", "dataset=cifar10",
                 f"data_dir={tmp_path / 'data'}", "trainer.batch_size=10"]  # fmt: skip
        layer = "layer1.block1.branch.conv1.weight"
    summary, run_dir = run_in_process(
        tmp_path, [f"init={init}", "trainer.epochs=1", "logger=[]", *model]
    )
    assert summary["status"] == "finished"
    assert summary["init_scheme"] == resolve(init)
    weights = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"][layer]
    assert torch.isfinite(weights).all()
    if init == "lsuv":  # the data-dependent scheme got its batch and reports per layer
        assert [row["layer"] for row in summary["init_report"]] == ["fc1", "fc2", "head"]


class LossBlowsUpAt:
    """Stands in for ``torch.nn.functional`` in the engine: the training loss (the mean
    cross-entropy; evaluation sums) becomes ``value`` from the ``step``-th optimizer step on.
    Adding a constant leaves the gradients finite, so only the check on the loss can see it."""

    def __init__(self, step, value):
        self.step, self.value, self.calls = step, value, 0

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def cross_entropy(self, logits, y, **kwargs):
        loss = torch.nn.functional.cross_entropy(logits, y, **kwargs)
        if kwargs.get("reduction", "mean") != "mean":
            return loss
        step, self.calls = self.calls, self.calls + 1
        return loss + self.value if step >= self.step else loss


# 2000 examples in batches of 8: 250 steps an epoch, so a divergence at step 300 (epoch 2) is
# found by the periodic check (every DIVERGENCE_CHECK_EVERY steps), long before the epoch ends.
LONG_EPOCHS = ["dataset.n_train=2000", "trainer.batch_size=8", "trainer.epochs=2"]


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_divergence_mid_training_stops_within_the_check_interval(tmp_path, monkeypatch, value):
    monkeypatch.setattr(engine, "F", LossBlowsUpAt(300, value))
    summary, run_dir = run_in_process(tmp_path, LONG_EPOCHS)
    assert summary["status"] == "diverged"
    assert summary["diverged_at_step"] == 300  # the exact step, read on the device
    # stopped at the first check after it, not at the end of the epoch (step 500)
    assert 300 < summary["global_step"] <= 300 + engine.DIVERGENCE_CHECK_EVERY
    # the last finite metrics are those of epoch 1, the only one completed
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]
    assert summary["epochs_completed"] == 1
    assert summary["final"] == {
        "train_loss": rows[0]["train/loss"],
        "train_acc": rows[0]["train/acc"],
        "val_loss": rows[0]["val/loss"],
        "val_acc": rows[0]["val/acc"],
    }
    assert all(map(math.isfinite, summary["final"].values()))
    assert json.loads((run_dir / "summary.json").read_text())["diverged_at_step"] == 300
