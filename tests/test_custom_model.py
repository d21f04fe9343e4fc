"""A user's own network, from a file outside the package: the README's example trains,
diagnoses, packs and reports through ``model=custom``; layers and their activations are found
from the forward pass, not from names; a model a pack cannot vmap is refused in one line."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from helpers import ROOT, run_cli, write_cifar
from initbench.packing import check_packable
from initbench.telemetry import find_probes


def readme_example() -> str:
    """The README's ``mynets.py`` (the python block that starts with ``# mynets.py``)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if b.startswith("# mynets.py")]
    assert len(found) == 1, "the README shows mynets.py once"
    return found[0]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A user's folder: mynets.py as the README writes it, and a small CIFAR-10."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "mynets.py").write_text(readme_example())
    write_cifar(folder / "data" / "cifar-10-batches-py", n_per_batch=12, n_test=16)
    return folder


def common(folder) -> list[str]:
    return [
        "model=custom",
        "model._target_=mynets.TinyConvNet",
        "+model.width=8",
        "dataset=cifar10",
        "dataset.download=false",
        f"data_dir={folder / 'data'}",
        "trainer.device=cpu",
        "trainer.batch_size=16",
        "logger=tensorboard",
    ]


def run_user(folder, script: str, *args: str):
    """``python <repo>/<script> *args`` from the user's folder with PYTHONPATH=. (the README)."""
    proc = run_cli(str(ROOT / script), *args, cwd=folder, env={"PYTHONPATH": "."}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_readme_network_trains_diagnoses_packs_and_reports(user_folder) -> None:
    runs = user_folder / "runs"
    run_user(user_folder, "src/train.py", *common(user_folder), "init=kaiming_normal",
             "trainer.epochs=2", "telemetry.every_n_steps=2",
             f"hydra.run.dir={runs / 'one'}")  # fmt: skip
    summary = json.loads((runs / "one" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    assert summary["choices"]["model"] == "TinyConvNet"  # its label: the class name
    assert summary["n_params"] == (3 * 8 * 9 + 8) + (8 * 8 * 9 + 8) + (8 * 10 + 10)
    # The step-0 report and telemetry found its layers and the ReLU after each conv.
    report = json.loads((runs / "one" / "diagnose.json").read_text())
    assert [row["name"] for row in report["layers"]] == ["features.0", "features.2", "classifier"]
    dead = [row["dead_frac"] for row in report["layers"]]
    assert dead[0] is not None and dead[1] is not None and dead[2] is None  # the head: raw output
    assert "jacobian" in report
    acc = EventAccumulator(str(runs / "one" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"stats/dead_frac/features.0", "stats/dead_frac/features.2"} <= tags
    assert "stats/dead_frac/classifier" not in tags and "stats/act_std/classifier" in tags

    # Resumed from its checkpoint: one more epoch, not three.
    proc = run_user(user_folder, "src/train.py", *common(user_folder), "init=kaiming_normal",
                    "trainer.epochs=3", "telemetry.every_n_steps=2",
                    f"hydra.run.dir={runs / 'one'}")  # fmt: skip
    assert "resuming" in proc.stdout and "2 epochs done; epoch 3 starts" in proc.stdout
    summary = json.loads((runs / "one" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 3
    assert [row["epoch"] for row in summary_history(runs / "one")] == [1, 2, 3]

    run_user(user_folder, "src/diagnose.py", *common(user_folder), "init=xavier_normal",
             f"hydra.run.dir={runs / 'diag'}")  # fmt: skip
    diag = json.loads((runs / "diag" / "diagnose.json").read_text())
    assert [row["name"] for row in diag["layers"]] == ["features.0", "features.2", "classifier"]

    run_user(user_folder, "src/pack.py", *common(user_folder), "trainer.epochs=1",
             "pack.inits=[kaiming_normal,xavier_normal]", "pack.seeds=[0]",
             f"hydra.run.dir={runs / 'pack'}")  # fmt: skip
    members = sorted((runs / "pack").glob("*/summary.json"))
    assert len(members) == 2
    for path in members:
        member = json.loads(path.read_text())
        assert member["status"] == "finished" and member["pack"]["members"] == 2

    run_user(user_folder, "scripts/report.py", str(runs), "--out", str(user_folder / "report"))
    with open(user_folder / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4, rows  # the run, the pack's two members and the diagnosis
    assert sorted(r["status"] for r in rows).count("finished") == 3, rows
    assert {r["architecture"] for r in rows} == {"TinyConvNet(width=8)/cifar10"}


def test_the_modern_inits_train_the_users_network_in_one_pack(user_folder) -> None:
    """TAT (2 TAT layers: eta 0.3 is reachable), ZerO, MetaInit and GradInit on the README's
    network, with a holdout split: each member initialized as its own run, its cost recorded."""
    runs = user_folder / "modern"
    members = ["init=zero_init seed=0", "init=metainit init.steps=3 seed=0",
               "init=gradinit init.steps=3 seed=0", "init=tat seed=0"]  # fmt: skip
    run_user(user_folder, "src/pack.py", *common(user_folder), "trainer.epochs=1",
             "activation=tat", "activation.eta=0.3", "trainer.holdout=8",
             f"pack.members=[{','.join(repr(m) for m in members)}]",
             f"hydra.run.dir={runs}")  # fmt: skip
    summaries = [json.loads(p.read_text()) for p in sorted(runs.glob("*/summary.json"))]
    assert sorted(s["init_scheme"] for s in summaries) == [
        "gradinit", "metainit", "scaled_orthogonal", "zero_init"]  # fmt: skip
    for summary in summaries:
        assert summary["status"] == "finished" and "holdout_acc" in summary["final"]
        learned = summary["init_scheme"] in ("metainit", "gradinit")
        assert (summary["init_cost"]["backward_passes"] > 0) == learned


def summary_history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_sweep_file_runs_the_users_network(user_folder) -> None:
    sweep = user_folder / "mine.yaml"
    params = {
        "model": "custom", "model._target_": "mynets.TinyConvNet", "dataset": "cifar10",
        "dataset.download": "false", "data_dir": str(user_folder / "data"),
        "trainer.epochs": 1, "trainer.device": "cpu", "logger": "tensorboard",
    }  # fmt: skip
    lines = [f"  {k}:\n    value: {v}" for k, v in params.items()]
    sweep.write_text(
        f"name: mine\nmethod: grid\nprogram: {ROOT / 'src/train.py'}\n"
        "command:\n  - ${env}\n  - ${interpreter}\n  - ${program}\n  - ${args_no_hyphens}\n"
        "parameters:\n" + "\n".join(lines) + "\n  init:\n    values: [kaiming_normal, zeros]\n"
    )
    out = user_folder / "sweep"
    run_user(user_folder, "scripts/local_sweep.py", str(sweep), "--out", str(out), "--check")
    summaries = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    assert sorted(s["init_scheme"] for s in summaries) == ["kaiming_normal", "zeros"]
    assert all(s["status"] == "finished" for s in summaries)


def test_a_newcomers_mistakes_are_one_line_errors(user_folder) -> None:
    args = [*common(user_folder)[3:], "trainer.epochs=1"]
    target = "model._target_=mynets.TinyConvNet"
    for overrides, message, env in [
        (["model=custom"], "model._target_ must be the dotted path of an nn.Module class", "."),
        (["model=custom", "model._target_=nowhere.Net"],
         "model._target_=nowhere.Net cannot be imported (No module named 'nowhere'); a module "
         "of your own must be importable: run from its folder with PYTHONPATH=.", "."),
        (["model=custom", target], "mynets.TinyConvNet cannot be imported", None),  # no PYTHONPATH
        (["model=custom", "model._target_=mynets.TinyConvnet"],
         "mynets has no TinyConvnet; did you mean mynets.TinyConvNet?", "."),
        (["model=custom", target, "model.width=8"],
         "model.width is not in the composed config yet; add it with +model.width=8", "."),
        (["model=custom", target, "+model.widht=8"],
         "model.widht is not a config field; did you mean model.width?", "."),
    ]:  # fmt: skip
        proc = run_cli(str(ROOT / "src/train.py"), *overrides, *args,
                       f"hydra.run.dir={user_folder / 'bad'}", cwd=user_folder,
                       env={"PYTHONPATH": env})  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1, proc.stderr  # one line, nothing else
        assert proc.stderr.startswith("initbench: error: ") and message in proc.stderr
        assert not (user_folder / "bad").exists()


class Shuffled(nn.Module):
    """Modules defined in another order than they are called, with names no pattern knows, a
    functional activation, and a norm between a layer and its activation."""

    def __init__(self) -> None:
        super().__init__()
        self.squash = nn.Tanh()  # defined first, called after `proj` and `norm`
        self.out = nn.Linear(6, 3)
        self.norm = nn.LayerNorm(6)
        self.proj = nn.Linear(4, 6)
        self.gate = nn.Linear(3, 3)  # followed by torch.relu: no module

    def forward(self, x):
        h = self.squash(self.norm(self.proj(x)))
        return torch.relu(self.gate(self.out(h)))


def test_layers_are_paired_with_the_activation_the_forward_pass_calls_after_them() -> None:
    model = Shuffled()
    probes = {p.name: p for p in find_probes(model, torch.randn(1, 4))}
    assert list(probes) == ["out", "proj", "gate"]  # named_modules order
    assert probes["proj"].output is model.squash and probes["proj"].activation == "tanh"
    assert probes["out"].output is model.out and probes["gate"].output is model.gate
    # Without an example, definition order: squash comes before proj, so proj gets none.
    assert find_probes(model)[1].output is model.proj


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.fc(x)
        return y if y.sum().item() > 0 else -y


def test_a_pack_refuses_what_it_cannot_vmap_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"cannot be packed: torch.vmap cannot run") as err:
        check_packable(DataDependent(), torch.randn(2, 4))
    assert "\n" not in str(err.value) and "separate runs" in str(err.value)
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"batch norm \(1: BatchNorm1d\)"):
        check_packable(bn, torch.randn(2, 4))
    check_packable(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(2, 4))
