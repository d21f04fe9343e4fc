"""Packed runs: K members trained as one batched model equal their unpacked runs.

The library level (initbench.packing) against engine.train step by step; the run level
(initbench.run_pack) against initbench.run.run, file by file; checkpoints and resumes of a pack;
the pack entry point and local_sweep --pack.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import CPU_OVERRIDES, ROOT, compose_dict, run_cli
from initbench import inits, packing
from initbench import run as run_module
from initbench import run_pack as run_pack_module
from initbench.cli.pack import member_dirs, resume_hint
from initbench.data import load_dataset
from initbench.engine import DIVERGENCE_CHECK_EVERY, Callback, TrainState, fit, train
from initbench.errors import Interrupted, UserError, how_to_continue
from initbench.models import build_model
from initbench.packing import (
    Member,
    PackedModel,
    PackedTraining,
    member_optimizer_state,
    stacked_optimizer_state,
)
from initbench.run import run
from initbench.run_pack import check_pack, pack_groups, run_pack
from initbench.signals import StopNow
from initbench.sweep import combinations, load_sweep
from initbench.sweep.jobs import pack_jobs, pack_program
from initbench.sweep.spec import SweepError
from initbench.telemetry.observer import Telemetry

# --------------------------------------------------------------------------- library level

SCHEMES = [("kaiming_normal", 0), ("xavier_uniform", 1), ("zeros", 2), ("orthogonal", 0)]


@functools.cache
def gaussian():
    return load_dataset("gaussian", root="data", seed=0, n=600, n_test=200, dim=24)


def member_model(init, seed, dropout=0.0, arch="mlp", data=None):
    data = data or gaussian()
    kwargs = {"depth": 3, "width": 32, "dropout": dropout} if arch == "mlp" else {"depth": 4}
    model = build_model(
        arch, input_shape=data.input_shape, num_classes=data.num_classes, activation="relu",
        **kwargs,
    )  # fmt: skip
    init_name, params = (init, {}) if isinstance(init, str) else init
    inits.init_module(
        model, init_name, activation=torch.nn.ReLU(),
        generator=torch.Generator().manual_seed(seed), **params,
    )  # fmt: skip
    return model


def adam(params):
    return torch.optim.Adam(params, lr=3e-3)


def unpacked(specs, epochs=2, batch_size=50, make=adam, observers=None, data=None):
    data = data or gaussian()
    states = []
    for n, (init, seed) in enumerate(specs):
        model = member_model(init, seed, data=data)
        observer = observers[n](model) if observers else None
        states.append(
            train(
                model,
                data,
                make(model.parameters()),
                epochs=epochs,
                batch_size=batch_size,
                generator=torch.Generator().manual_seed(seed + 1),
                observer=observer,
            )  # fmt: skip
        )
    return states


class Diverged(Callback):
    """Records the members found diverged (engine.fit's callback)."""

    def __init__(self, found):
        self.found = found

    def on_diverged(self, member):
        self.found.append(member)


class WeightNorm(Callback):
    """A per-epoch metric as one callback: each member's parameter norm after the epoch."""

    def epoch_metrics(self, trainable, members):
        norms = [torch.cat([p.detach().reshape(-1) for p in m.parameters()]).norm()
                 for m in trainable.models()]  # fmt: skip
        return {"weights/norm": [float(n) for n in norms]}


def packed(specs, epochs=2, batch_size=50, make=adam, observers=None, data=None, diverged=None,
           callbacks=()):  # fmt: skip
    data = data or gaussian()
    models = [member_model(init, seed, data=data) for init, seed in specs]
    members = [
        Member(
            TrainState(),
            torch.Generator().manual_seed(seed + 1),
            data,
            observer=observers[n](models[n]) if observers else None,
        )  # fmt: skip
        for n, (_, seed) in enumerate(specs)
    ]
    pack = PackedModel(models, torch.device("cpu"))
    training = PackedTraining(pack, members, make(pack.parameters()), make, batch_size=batch_size)
    callbacks = [*callbacks, *([] if diverged is None else [Diverged(diverged)])]
    fit(training, [m.state for m in members], epochs=epochs, callbacks=callbacks)
    return [m.state for m in members], models


def losses(state):
    return [(row["train/loss"], row["val/loss"], row["val/acc"]) for row in state.history]


def test_packed_members_follow_their_unpacked_runs():
    ref = unpacked(SCHEMES)
    got, _ = packed(SCHEMES)
    for r, g in zip(ref, got, strict=True):
        assert g.status == r.status == "finished"
        assert g.global_step == r.global_step == 24
        np.testing.assert_allclose(losses(g), losses(r), rtol=1e-5, atol=1e-6)
    # zeros stalls at chance in both; Kaiming learns
    assert got[2].history[-1]["train/loss"] == pytest.approx(math.log(10), abs=0.01)
    assert got[0].history[-1]["train/loss"] < got[0].history[0]["train/loss"]


def test_a_per_epoch_metric_is_one_callback_for_a_run_and_a_pack_alike():
    data = gaussian()
    got, models = packed(SCHEMES[:2], epochs=2, callbacks=[WeightNorm()])
    for (init, seed), state, model in zip(SCHEMES[:2], got, models, strict=True):
        ref_model = member_model(init, seed)
        ref = train(
            ref_model, data, adam(ref_model.parameters()), epochs=2, batch_size=50,
            generator=torch.Generator().manual_seed(seed + 1), callbacks=[WeightNorm()],
        )  # fmt: skip
        for row_pack, row_run in zip(state.history, ref.history, strict=True):
            assert row_pack["weights/norm"] == pytest.approx(row_run["weights/norm"], rel=1e-5)
        norm = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm()
        assert state.history[-1]["weights/norm"] == pytest.approx(float(norm), rel=1e-6)
        assert "weights_norm" in state.final


def test_packed_weights_equal_the_unpacked_weights_after_training():
    data = gaussian()
    _, models = packed(SCHEMES[:2], epochs=1)
    for (init, seed), model in zip(SCHEMES[:2], models, strict=True):
        ref = member_model(init, seed)
        train(
            ref, data, adam(ref.parameters()), epochs=1, batch_size=50,
            generator=torch.Generator().manual_seed(seed + 1),
        )  # fmt: skip
        for (name, a), (_, b) in zip(
            model.state_dict().items(), ref.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_each_member_sees_its_own_seeds_data_order():
    data = gaussian()
    pack = PackedModel([member_model("zeros", 0), member_model("zeros", 0)], torch.device("cpu"))
    members = [Member(TrainState(), torch.Generator().manual_seed(s), data) for s in (1, 2)]
    training = PackedTraining(pack, members, adam(pack.parameters()), adam, batch_size=50)
    x, y = training._batch(training._epoch_plans(), 0)
    for k, seed in enumerate((1, 2)):
        ref_x, ref_y = next(iter(data.batches("train", 50, torch.Generator().manual_seed(seed))))
        assert torch.equal(x[k], ref_x) and torch.equal(y[k], ref_y)
    assert not torch.equal(y[0], y[1])


class BlowsUpAt:
    """cross_entropy whose per-example losses of member ``member`` of a pack of ``members``
    become ``value`` from training step ``step`` on (a divergence in the middle of training),
    as long as the pack is whole."""

    def __init__(self, step, member, members, batch, value=float("inf")):
        self.step, self.member, self.batch, self.value = step, member, batch, value
        self.members, self.calls = members, 0

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def cross_entropy(self, logits, y, **kwargs):
        loss = torch.nn.functional.cross_entropy(logits, y, **kwargs)
        if loss.dim() == 1 and loss.shape[0] == self.members * self.batch:  # a training step
            step, self.calls = self.calls, self.calls + 1
            if step >= self.step:
                b = self.batch
                loss = loss.clone()
                loss[self.member * b : (self.member + 1) * b] = self.value
        return loss


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_member_that_diverges_is_frozen_and_the_others_go_on(monkeypatch, value):
    # 600 examples in batches of 10: 60 steps an epoch; member 1 blows up at step 70 (epoch 2)
    specs = SCHEMES[:3]
    ref = unpacked(specs, epochs=3, batch_size=10)
    monkeypatch.setattr(packing, "F", BlowsUpAt(70, 1, 3, 10, value))
    diverged = []
    got, _ = packed(specs, epochs=3, batch_size=10, diverged=diverged)
    assert diverged == [1]
    assert got[1].status == "diverged" and got[1].diverged_at_step == 70
    # found at the first check after it, as an unpacked run would be
    assert got[1].global_step == 2 * DIVERGENCE_CHECK_EVERY
    assert len(got[1].history) == 1 and got[1].final["val_loss"] == got[1].history[0]["val/loss"]
    np.testing.assert_allclose(losses(got[1]), losses(ref[1])[:1], rtol=1e-5, atol=1e-6)
    for k in (0, 2):  # unaffected: the same trajectories as alone
        assert got[k].status == "finished"
        np.testing.assert_allclose(losses(got[k]), losses(ref[k]), rtol=1e-5, atol=1e-6)


def test_a_member_that_diverges_at_step_0_leaves_the_pack_at_the_first_check():
    specs = [("kaiming_normal", 0), (("normal", {"std": 1e30}), 0), ("zeros", 1)]
    ref = unpacked(specs, epochs=2, batch_size=10)
    got, _ = packed(specs, epochs=2, batch_size=10)
    assert ref[1].status == got[1].status == "diverged"
    assert ref[1].diverged_at_step == got[1].diverged_at_step == 0
    assert ref[1].global_step == got[1].global_step == DIVERGENCE_CHECK_EVERY
    for k in (0, 2):
        np.testing.assert_allclose(losses(got[k]), losses(ref[k]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        functools.partial(torch.optim.Adam, lr=1e-2, weight_decay=1e-3),
        functools.partial(torch.optim.AdamW, lr=1e-2),
    ],
    ids=["sgd-momentum", "adam-wd", "adamw"],
)
def test_one_optimizer_over_the_stacks_updates_each_member_as_its_own(make):
    ref = unpacked(SCHEMES[:2], make=make)
    got, _ = packed(SCHEMES[:2], make=make)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(losses(g), losses(r), rtol=1e-5, atol=1e-6)


def test_optimizer_state_splits_into_members_and_stacks_back():
    models = [member_model(i, s) for i, s in SCHEMES[:3]]
    pack = PackedModel(models, torch.device("cpu"))
    opt = adam(pack.parameters())
    x = torch.randn(3, 8, 24)
    pack(x).sum().backward()
    opt.step()
    parts = [member_optimizer_state(opt, k) for k in range(3)]
    # each part loads into an optimizer over the member's own parameters
    for k, part in enumerate(parts):
        own = adam(member_model(*SCHEMES[k]).parameters())
        own.load_state_dict(part)
        avg = own.state_dict()["state"][0]["exp_avg"]
        torch.testing.assert_close(avg, opt.state_dict()["state"][0]["exp_avg"][k])
    back = stacked_optimizer_state(parts, pack.parameters())
    for i, entry in opt.state_dict()["state"].items():
        for key, value in entry.items():
            torch.testing.assert_close(back["state"][i][key], value)


def test_member_modules_are_live_views_of_the_pack():
    models = [member_model(i, s) for i, s in SCHEMES[:2]]
    before = [m.fc1.weight.clone() for m in models]
    pack = PackedModel(models, torch.device("cpu"))
    for m, b in zip(models, before, strict=True):
        assert torch.equal(m.fc1.weight, b)  # initialized weights kept
    with torch.no_grad():
        pack.params["fc1.weight"][1].add_(1.0)
    assert torch.equal(models[1].fc1.weight, before[1] + 1) and torch.equal(
        models[0].fc1.weight, before[0]
    )
    x = torch.randn(2, 5, 24)
    torch.testing.assert_close(pack(x)[1], models[1](x[1]))


def test_batch_norm_is_refused():
    data = load_dataset("gaussian", root="data", seed=0, n=64, n_test=16, dim=8)
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, depth=1, width=4)
    model.add_module("bn", torch.nn.BatchNorm1d(10))
    with pytest.raises(ValueError, match="batch norm"):
        PackedModel([model], data.device)


class Recorder:
    wandb_run_id = None

    def __init__(self):
        self.scalars = {}

    def log_scalars(self, scalars, step):
        self.scalars.setdefault(step, {}).update(scalars)

    def log_histograms(self, histograms, step):
        pass


def test_telemetry_of_a_member_matches_its_unpacked_run():
    sinks = {"ref": [Recorder(), Recorder()], "pack": [Recorder(), Recorder()]}

    def observers(kind):
        return [
            lambda model, k=k: Telemetry(model, sinks[kind][k], every_n_steps=7, histograms=False)
            for k in range(2)
        ]

    unpacked(SCHEMES[:2], epochs=2, observers=observers("ref"))
    packed(SCHEMES[:2], epochs=2, observers=observers("pack"))
    for ref, got in zip(sinks["ref"], sinks["pack"], strict=True):
        assert sorted(got.scalars) == sorted(ref.scalars) == [0, 7, 14, 21]
        for step, scalars in ref.scalars.items():
            assert set(got.scalars[step]) == set(scalars)
            for tag, value in scalars.items():
                assert got.scalars[step][tag] == pytest.approx(value, rel=1e-4, abs=1e-7), tag


# ------------------------------------------------------------------------------- run level

PACK_OVERRIDES = [*CPU_OVERRIDES, "trainer.epochs=2", "dataset.n_train=400"]
MEMBERS = [["init=kaiming_normal", "seed=0"], ["init=zeros", "seed=1"], ["init=orthogonal"]]


def member_cfgs(extra=(), members=MEMBERS):
    return [compose_dict([*PACK_OVERRIDES, *extra, *m]) for m in members]


def optimizer(cfg):
    return functools.partial(torch.optim.Adam, lr=cfg["optimizer"]["lr"])


def test_a_pack_writes_each_member_as_its_unpacked_run(tmp_path):
    cfgs = member_cfgs(["model.dropout=0"])
    dirs = [tmp_path / "pack" / c["run_name"] for c in cfgs]
    summaries = run_pack(cfgs, dirs, optimizer(cfgs[0]))
    for cfg, run_dir, summary in zip(cfgs, dirs, summaries, strict=True):
        alone = run(cfg, tmp_path / "alone" / cfg["run_name"], optimizer(cfg))
        assert summary["status"] == alone["status"] == "finished"
        assert summary["pack"]["members"] == 3
        for key, value in alone["final"].items():
            assert summary["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        files = {p.name for p in run_dir.iterdir()}
        assert {"config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json",
                "weights.npz", "diagnose.json", "tensorboard"} <= files  # fmt: skip
        diag = json.loads((run_dir / "diagnose.json").read_text())
        ref = json.loads((tmp_path / "alone" / cfg["run_name"] / "diagnose.json").read_text())
        assert diag["layers"] == ref["layers"]  # step 0: the very same weights and batch
        # the checkpoint is a member's own, not the pack's: it loads into an unpacked run
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        assert ckpt["model"]["fc1.weight"].shape == (256, 2)
        assert ckpt["optimizer"]["state"][0]["exp_avg"].shape == (256, 2)


def test_a_second_call_skips_the_members_that_are_done(tmp_path):
    cfgs = member_cfgs()
    dirs = [tmp_path / c["run_name"] for c in cfgs]
    run_pack(cfgs[:1], dirs[:1], optimizer(cfgs[0]))
    before = (dirs[0] / "summary.json").read_text()
    summaries = run_pack(cfgs, dirs, optimizer(cfgs[0]))
    assert (dirs[0] / "summary.json").read_text() == before  # untouched
    assert [s["status"] for s in summaries] == ["finished"] * 3
    assert summaries[0]["pack"]["members"] == 1 and summaries[1]["pack"]["members"] == 2


def stop_at_poll(monkeypatch, n):
    polls = itertools.count(1)

    @contextlib.contextmanager
    def fake_signals():
        yield lambda: signal.SIGTERM if next(polls) >= n else None

    monkeypatch.setattr(run_pack_module, "stop_on_signals", fake_signals)


def test_a_stopped_pack_resumes_exactly(tmp_path, monkeypatch):
    # dropout on: the resumed pack must also continue the RNG stream of the masks
    cfgs = member_cfgs(["model.dropout=0.2", "trainer.epochs=3"])
    full = run_pack(cfgs, [tmp_path / "full" / c["run_name"] for c in cfgs], optimizer(cfgs[0]))
    dirs = [tmp_path / "stopped" / c["run_name"] for c in cfgs]
    stop_at_poll(monkeypatch, 11)  # mid-epoch 2 (7 steps an epoch)
    with pytest.raises(Interrupted, match="every member still training saved a checkpoint") as e:
        run_pack(cfgs, dirs, optimizer(cfgs[0]))
    # The pack command says where to resume: the pack's folder, not a member's.
    hint = resume_hint(e.value, tmp_path / "stopped")
    assert hint.endswith(
        f"Run the same command with hydra.run.dir={tmp_path / 'stopped'} to continue."
    )
    for d in dirs:
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["global_step"] == 10
    monkeypatch.undo()
    resumed = run_pack(cfgs, dirs, optimizer(cfgs[0]))
    for a, b in zip(full, resumed, strict=True):
        assert a["final"] == b["final"]  # bit for bit


def test_a_signal_during_the_members_step0_reports_stops_the_pack_as_a_run(tmp_path, monkeypatch):
    """SIGTERM before the pack's first step (here: while its second member runs its step-0
    report) is recorded interrupted in every member's summary.json and goes up as Interrupted
    (exit 143), as it does for a run; it was a StopNow traceback with members left running."""
    cfgs = member_cfgs()
    dirs = [tmp_path / c["run_name"] for c in cfgs]
    calls = itertools.count()
    real_step0 = run_module.Session.step0

    def step0(session):
        if next(calls) == 1:
            raise StopNow(signal.SIGTERM)
        real_step0(session)

    monkeypatch.setattr(run_module.Session, "step0", step0)
    with pytest.raises(Interrupted) as stop:
        run_pack(cfgs, dirs, optimizer(cfgs[0]))
    assert stop.value.signum == signal.SIGTERM
    assert "before training started" in str(stop.value)
    for d in dirs:
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]


def test_a_stop_before_a_pack_resumes_names_the_pack_folder(tmp_path):
    member = tmp_path / "pack" / "kaiming-relu-mlp-s0"
    before = Interrupted(signal.SIGTERM, member, message=(
        f"stopped by SIGTERM before training resumed; the checkpoint in {member} is as it was. "
        f"{how_to_continue(member)}"))  # fmt: skip
    assert f"hydra.run.dir={tmp_path / 'pack'} to continue" in resume_hint(
        before, tmp_path / "pack"
    )
    fresh = Interrupted(signal.SIGTERM, member, message="stopped by SIGTERM before training "
                        "started: ...; running the same command again starts over.")  # fmt: skip
    assert "hydra.run.dir" not in resume_hint(fresh, tmp_path / "pack")


def test_members_saved_at_different_steps_train_as_separate_packs():
    cfgs = member_cfgs()
    ckpt = {"train_state": {"epoch": 1, "global_step": 7}}
    groups = pack_groups(cfgs, [(0, None), (1, ckpt), (2, None)], None)
    assert [[i for i, _ in g] for g in groups] == [[0, 2], [1]]
    assert [[i for i, _ in g] for g in pack_groups(cfgs, [(0, None), (2, None)], 1)] == [[0], [2]]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["trainer.epochs=3"], r"member 2 .* differs .* trainer.epochs: 2 -> 3"),
        (["optimizer.lr=0.1"], r"optimizer.lr"),
    ],
)
def test_members_that_differ_in_more_than_init_and_seed_are_refused(extra, match):
    cfgs = member_cfgs()
    cfgs[1] = compose_dict([*PACK_OVERRIDES, *extra, *MEMBERS[1]])
    with pytest.raises(UserError, match=match):
        check_pack(cfgs)


def test_settings_a_pack_cannot_honour_are_refused():
    with pytest.raises(
        UserError, match=r"cannot be packed: it has batch norm \(bn1: BatchNorm2d\)"
    ):
        check_pack([compose_dict(["model=cnn", "model.norm=batch", *m]) for m in MEMBERS])
    with pytest.raises(UserError, match="trainer.compile must be false in a pack"):
        check_pack(member_cfgs(["trainer.compile=true"]))


def test_a_pack_of_an_absurd_depth_is_refused_at_once():
    """check_pack looks for batch norm on the meta-built model, which stops at MAX_MODULES
    as the memory check does (it built 3 x 10**8 modules before)."""
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"more than 20000 modules.*model\.depth=100000000"):
        check_pack(member_cfgs(["model.depth=100000000"]))
    assert time.perf_counter() - start < 30


def test_members_with_one_run_name_get_folders_of_their_own():
    names = ["normal-relu-mlp-s0", "normal-relu-mlp-s0", "zeros-relu-mlp-s0"]
    overrides = [["init=normal", "init.std=0.1", "seed=0"], ["init=normal", "init.std=1"],
                 ["init=zeros"]]  # fmt: skip
    dirs = member_dirs(Path("p"), names, overrides)
    assert [d.name for d in dirs] == [
        "normal-relu-mlp-s0__init.std-0.1", "normal-relu-mlp-s0__init.std-1", "zeros-relu-mlp-s0"
    ]  # fmt: skip
    with pytest.raises(UserError, match="the same run"):
        member_dirs(Path("p"), names[:2], [overrides[0], overrides[0]])


# ----------------------------------------------------------------------------- entry points


def test_pack_command_trains_every_init_x_seed_in_its_own_folder(tmp_path):
    out = tmp_path / "p"
    proc = run_cli(
        "src/pack.py", *PACK_OVERRIDES, "trainer.epochs=1", "pack.inits=[zeros,normal_std10]",
        "pack.seeds=[0,1]", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != ".hydra")
    assert names == [
        "normal_std10-relu-mlp-s0",
        "normal_std10-relu-mlp-s1",
        "zeros-relu-mlp-s0",
        "zeros-relu-mlp-s1",
    ]  # fmt: skip  (run names use the option as chosen: normal_std10)
    index = json.loads((out / "pack.json").read_text())
    assert [m["status"] for m in index["members"]] == ["finished"] * 4
    summary = json.loads((out / "normal_std10-relu-mlp-s1" / "summary.json").read_text())
    assert summary["choices"]["init"] == "normal_std10" and summary["choices"]["seed"] == 1
    assert "zeros-relu-mlp-s0" in proc.stdout


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["init=zeros"], "init is chosen per member in a pack"),
        (["pack.inits=[zeros,bogus]"], "init must be one of .*(got 'bogus')"),
        (['pack.members=["init=zeros trainer.epochs=2"]'], "trainer.epochs cannot differ"),
        (["pack.seeds=[]"], r"pack.seeds must be a non-empty list of integers >= 0"),
        (["pack.dirs=[a]"], r"pack.dirs must list one run directory per member \(51\)"),
        (["pack.max_members=0"], r"pack.max_members must be"),
    ],
)
def test_bad_pack_commands_are_one_line_and_leave_no_folder(tmp_path, args, match):
    out = tmp_path / "p"
    proc = run_cli("src/pack.py", *args, f"hydra.run.dir={out}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("initbench: error: ")
    assert re.search(match, proc.stderr), proc.stderr
    assert not out.exists()


def test_local_sweep_packs_combinations_that_differ_in_init_and_seed(tmp_path):
    sweep = load_sweep(ROOT / "sweeps" / "grid.yaml")
    jobs = pack_jobs(sweep, combinations(sweep), tmp_path, max_members=None)
    assert len(jobs) == 3 * 6 and all(len(j.combos) == 51 for j in jobs)
    first = jobs[0]
    assert first.cmd[2] == "src/pack.py"
    assert "experiment=fashion_mlp" in first.cmd and "activation=relu" in first.cmd
    members = next(a for a in first.cmd if a.startswith("pack.members="))
    assert members.startswith("pack.members=['init=constant seed=0','init=constant seed=1'")
    dirs = next(a for a in first.cmd if a.startswith("pack.dirs="))
    assert str(tmp_path / first.combos[0].name) in dirs
    split = pack_jobs(sweep, combinations(sweep), tmp_path, max_members=20)
    assert [len(j.combos) for j in split[:3]] == [20, 20, 11]


def test_local_sweep_pack_needs_the_training_program():
    assert pack_program("src/train.py") == "src/pack.py"
    assert pack_program("initbench-train") == "initbench-pack"
    with pytest.raises(SweepError, match="--pack trains several combinations of src/train.py"):
        pack_program("src/diagnose.py")


@pytest.mark.slow
def test_a_packed_local_sweep_equals_the_unpacked_one_and_skips_what_is_done(tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "name: s\nmethod: grid\nprogram: src/train.py\n"
        'command: ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]\n'
        "metric: {name: val/acc, goal: maximize}\n"
        "parameters:\n"
        "  experiment: {value: circles_mlp}\n"
        "  trainer.epochs: {value: 40}\n"
        "  trainer.device: {value: cpu}\n"
        "  logger: {value: tensorboard}\n"
        "  init: {values: [zeros, kaiming_normal]}\n"
        "  seed: {values: [0, 1]}\n"
    )
    packed_out, alone_out = tmp_path / "packed", tmp_path / "alone"
    # one combination done beforehand, unpacked: the packed sweep leaves it alone
    first = run_cli(
        "scripts/local_sweep.py", str(sweep_file), "--out", str(packed_out), "--count", "1"
    )
    assert first.returncode == 0, first.stdout + first.stderr
    proc = run_cli("scripts/local_sweep.py", str(sweep_file), "--out", str(packed_out), "--pack")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 already done, 3 to run in 1 processes" in proc.stdout
    # the pack's 3 members end together: one progress line for the three, not an ETA each;
    # each member's line gives its run's seconds (the sweep table's) and the process's
    assert re.findall(r"sweep s: (\d+)/4 runs", proc.stdout) == ["4"]
    for combo in combinations(load_sweep(sweep_file))[1:]:
        wall = json.loads((packed_out / combo.name / "summary.json").read_text())["wall_s"]
        assert re.search(rf"\] finished .*  {wall:.1f} s run, [\d.]+ s process", proc.stdout)
    alone = run_cli("scripts/local_sweep.py", str(sweep_file), "--out", str(alone_out))
    assert alone.returncode == 0
    for combo in combinations(load_sweep(sweep_file)):
        a = json.loads((packed_out / combo.name / "summary.json").read_text())
        b = json.loads((alone_out / combo.name / "summary.json").read_text())
        for key, value in b["final"].items():
            assert a["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-6)
    record = json.loads((packed_out / combo.name / "local_sweep.json").read_text())
    assert record["pack"].startswith(str(packed_out / "packs" / "pack__experiment-circles_mlp"))


def test_a_pack_killed_between_two_members_saves_resumes_as_one_pack(tmp_path):
    cfgs = member_cfgs(["model.dropout=0.2", "trainer.epochs=3"])
    full = run_pack(cfgs, [tmp_path / "full" / c["run_name"] for c in cfgs], optimizer(cfgs[0]))
    dirs = [tmp_path / "killed" / c["run_name"] for c in cfgs]
    two = member_cfgs(["model.dropout=0.2", "trainer.epochs=2"])  # checkpoints at epochs 1, 2
    run_pack(two, dirs, optimizer(cfgs[0]))
    # as if killed after members 0 and 2 saved epoch 2 but before member 1 did
    (dirs[1] / "checkpoint.prev.pt").replace(dirs[1] / "checkpoint.pt")
    behind = torch.load(dirs[1] / "checkpoint.pt", weights_only=True)["train_state"]["epoch"]
    assert behind == 1
    (dirs[1] / "summary.json").unlink()  # not finished: it has training left
    resumed = run_pack(cfgs, dirs, optimizer(cfgs[0]))  # trainer.epochs 2 -> 3 may resume
    for a, b in zip(full, resumed, strict=True):
        assert a["final"] == b["final"]  # one pack again: the same dropout draws


def test_under_a_wandb_agent_members_get_their_own_runs_and_the_agents_run_the_pack(tmp_path):
    out = tmp_path / "p"
    env = {"WANDB_MODE": "offline", "WANDB_SWEEP_ID": "sweep1", "WANDB_RUN_ID": "agentrun1"}
    proc = run_cli(
        "src/pack.py", *[o for o in PACK_OVERRIDES if not o.startswith("logger")],
        "trainer.epochs=1", "pack.inits=[zeros,kaiming_normal]", "pack.seeds=[0]",
        f"hydra.run.dir={out}", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    member_ids = set()
    for name in ("zeros-relu-mlp-s0", "kaiming_normal-relu-mlp-s0"):
        (run,) = (out / name / "wandb").glob("offline-run-*")
        member_ids.add(run.name.rsplit("-", 1)[1])
        assert json.loads((out / name / "summary.json").read_text())["wandb_run_id"] in run.name
    assert len(member_ids) == 2 and "agentrun1" not in member_ids  # one W&B run each
    (agent,) = (out / "wandb").glob("offline-run-*")  # the agent's run: the pack
    assert agent.name.endswith("-agentrun1")


def test_a_pack_that_fails_at_start_is_recorded_for_each_of_its_combinations(tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "name: s\nmethod: grid\nprogram: src/train.py\n"
        'command: ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]\n'
        "parameters:\n"
        "  dataset: {value: circles}\n"
        "  init: {values: [zeros, no_such_init]}\n"
    )
    out = tmp_path / "out"
    proc = run_cli("scripts/local_sweep.py", str(sweep_file), "--out", str(out), "--pack")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for combo in combinations(load_sweep(sweep_file)):
        record = json.loads((out / combo.name / "local_sweep.json").read_text())
        assert record["status"] == "failed" and record["returncode"] == 2
        assert "init must be one of" in record["error"]


def test_a_member_that_cannot_start_is_recorded_and_the_others_train(tmp_path, monkeypatch):
    real = run_pack_module.prepare

    def prepare(cfg, **kwargs):
        if cfg["run_name"].startswith("zeros"):
            raise UserError("init: cannot be built here")
        return real(cfg, **kwargs)

    monkeypatch.setattr(run_pack_module, "prepare", prepare)
    cfgs = member_cfgs()
    dirs = [tmp_path / c["run_name"] for c in cfgs]
    summaries = run_pack(cfgs, dirs, optimizer(cfgs[0]))
    assert [s["status"] for s in summaries] == ["finished", "failed", "finished"]
    on_disk = json.loads((dirs[1] / "summary.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == "init: cannot be built here"
    assert summaries[0]["pack"]["members"] == 2 and summaries[2]["pack"]["position"] == 1


def test_a_pack_whose_data_is_missing_is_one_error_recorded_in_every_member(tmp_path):
    cfgs = [
        compose_dict(
            [
                "dataset=cifar10",
                "dataset.download=false",
                f"data_dir={tmp_path}",
                "trainer.device=cpu",
                "logger=[]",
                *m,
            ]
        )  # fmt: skip
        for m in MEMBERS
    ]
    dirs = [tmp_path / "runs" / c["run_name"] for c in cfgs]
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        run_pack(cfgs, dirs, optimizer(cfgs[0]))
    for d in dirs:
        assert json.loads((d / "summary.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------- scripts/cnn_recipe.py


def test_cnn_recipe_trains_both_inits_once_and_tables_what_the_runs_recorded(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from helpers import write_cifar

    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=8, n_test=8)
    out = tmp_path / "recipe"
    args = ["scripts/cnn_recipe.py", "--models", "cnn", "--seeds", "0", "--epochs", "1",
            "--out", str(out), "dataset=cifar10", f"data_dir={tmp_path / 'data'}",
            "model.depth=3", "model.channels=4", "trainer.batch_size=10",
            "telemetry.every_n_steps=2", "trainer.device=cpu"]  # fmt: skip
    proc = run_cli(*args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "cnn_recipe.md").read_text()
    assert table in proc.stdout
    header, _, *rows = table.splitlines()
    assert header.split(" | ")[:5] == ["| model", "init", "seed", "status", "val acc per epoch"]
    assert [r.split(" | ")[:4] for r in rows] == [
        ["| cnn", "kaiming", "0", "finished"], ["| cnn", "xavier", "0", "finished"],
    ]  # fmt: skip
    for row, init in zip(rows, ["kaiming", "xavier"], strict=True):
        run_dir = out / "cnn" / f"{init}-relu-cnn-s0"
        cells = [c.strip() for c in row.strip("|").split("|")]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert cells[4] == f"{summary['final']['val_acc']:.3f}"  # one epoch: its accuracy
        step0 = json.loads((run_dir / "diagnose.json").read_text())["layers"]
        convs = [layer for layer in step0 if layer["kind"] == "conv2d"]
        assert cells[6] == f"{convs[0]['act_rms']:.2g} → {convs[-1]['act_rms']:.2g}"
        assert cells[7] == f"{convs[0]['grad_std']:.3g}"
        events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        dead = {
            n: events.Scalars(f"stats/dead_frac/{n}")[-1].value for n in ("conv1", "conv2", "conv3")
        }
        assert [float(c) for c in cells[8:11]] == pytest.approx(
            [dead["conv1"], dead["conv2"], dead["conv3"]], abs=5e-3
        )
        assert float(cells[11]) == pytest.approx(sum(dead.values()) / 3, abs=5e-3)
        config = (run_dir / "config.yaml").read_text()
        assert "torch.optim.SGD" in config and "lr: 0.003" in config  # the model's recipe
    # a second call trains nothing and prints the same table
    again = run_cli(*args, timeout=300)
    assert again.returncode == 0 and "0 already done" not in again.stderr
    assert (out / "cnn_recipe.md").read_text() == table
    assert "2 already done, 0 to train" in again.stderr + again.stdout


def test_a_member_resumed_in_a_pack_of_another_size_records_it(tmp_path, monkeypatch):
    """A member's folder deleted while the pack was stopped: the others resume together in a
    pack of 2 (the deleted one starts over alone), and their summary.json says so, since
    dropout draws depend on who is in the pack."""
    cfgs = member_cfgs(["model.dropout=0.2", "trainer.epochs=3"])
    dirs = [tmp_path / c["run_name"] for c in cfgs]
    stop_at_poll(monkeypatch, 11)  # mid-epoch 2 (7 steps an epoch): checkpoints of epoch 1
    with pytest.raises(Interrupted):
        run_pack(cfgs, dirs, optimizer(cfgs[0]))
    monkeypatch.undo()
    shutil.rmtree(dirs[2])
    summaries = run_pack(cfgs, dirs, optimizer(cfgs[0]))
    for summary in summaries[:2]:
        assert summary["status"] == "finished"
        assert summary["pack"]["changes"] == [
            {"at_epoch": 1, "members_before": 3, "members_after": 2}]  # fmt: skip
    assert summaries[2]["status"] == "finished" and "changes" not in summaries[2]["pack"]
