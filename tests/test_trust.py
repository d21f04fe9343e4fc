"""Results nobody can silently corrupt: checkpoints that cannot run code, run directories that
refuse another config, failures that are recorded, and bad input refused before any work."""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import signal
import subprocess
import textwrap
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from helpers import ROOT, compose_dict, run_cli, run_train_cli
from initbench import engine
from initbench import run as run_module
from initbench.build import validate
from initbench.checkpoint import CHECKPOINT, PREVIOUS_CHECKPOINT
from initbench.errors import Interrupted, UserError
from initbench.io import dumps_strict, to_strict_json
from initbench.report import load_local
from initbench.run import run
from initbench.sweep.local import _last_error_line, _last_metric

SMALL = [
    "dataset=circles",
    "trainer.epochs=2",
    "trainer.batch_size=64",
    "trainer.device=cpu",
    "model.width=32",
    "logger=tensorboard",
]


def train_here(run_dir, *overrides):
    cfg = compose_dict([*SMALL, *overrides])
    return run(cfg, run_dir, make_optimizer=instantiate(cfg["optimizer"]))


@pytest.fixture
def tmpfs(tmp_path):
    """A mount factory: ``tmpfs(size, readonly=False)`` mounts a fresh tmpfs and returns its
    path (unmounted afterwards); skips where the machine does not allow mounting."""
    mounts = []

    def mount(size: str, readonly: bool = False):
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


# ----------------------------------------------------------------------------- 1. checkpoints


class _Payload:
    """What a crafted checkpoint smuggles in: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_checkpoint_is_refused_and_never_run(tmp_path):
    run_dir = tmp_path / "run"
    train_here(run_dir)
    marker = tmp_path / "code-ran"
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        torch.save(
            {"model": _Payload(marker), "optimizer": {}, "train_state": {}, "config": {}},
            run_dir / name,
        )
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    with pytest.raises(UserError) as err:
        train_here(run_dir, "trainer.epochs=3")
    assert not marker.exists(), "unpickling the checkpoint ran code"
    message = str(err.value)
    assert f"{CHECKPOINT}: refused" in message and f"{PREVIOUS_CHECKPOINT}: refused" in message
    assert "nothing in it was run" in message


def test_a_real_checkpoint_holds_only_tensors_and_plain_data(tmp_path):
    train_here(tmp_path)
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)  # raises on anything else
    assert isinstance(ckpt["numpy_rng"], list) and isinstance(ckpt["numpy_rng"][1], list)


# ----------------------------------------------------------------------------- 2. reuse


@pytest.mark.parametrize(
    "change, difference",
    [
        ("model.width=64", "model.width: 32 -> 64"),
        ("init=kaiming", "init.name: 'pytorch_default' -> 'kaiming'"),
        ("seed=1", "seed: 0 -> 1"),
    ],
)
def test_a_finished_run_is_not_reused_for_another_config(tmp_path, change, difference):
    train_here(tmp_path)
    with pytest.raises(UserError) as err:
        train_here(tmp_path, change)
    assert "holds a finished run of a different config" in str(err.value)
    assert difference in str(err.value)


def test_a_diverged_run_is_not_reused_for_another_config(tmp_path):
    train_here(tmp_path, "init=normal", "init.std=1e30")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"
    assert train_here(tmp_path, "init=normal", "init.std=1e30")["status"] == "diverged"
    with pytest.raises(UserError, match="holds a diverged run of a different config"):
        train_here(tmp_path, "init=normal", "init.std=1e29")


def test_a_finished_run_with_the_same_config_is_still_extended(tmp_path):
    assert train_here(tmp_path)["epochs_completed"] == 2
    assert train_here(tmp_path, "trainer.epochs=3")["epochs_completed"] == 3


# ----------------------------------------------------------------------------- 5. disk full


def test_a_full_disk_is_recorded_as_failed_in_one_line(tmpfs):
    """A real full disk (a 1 MiB tmpfs): the checkpoint (~3 MB) cannot be written."""
    run_dir = tmpfs("1m") / "run"
    proc = run_train_cli(
        *SMALL, "model.width=512", "logger=[]", "telemetry.enabled=false",
        f"hydra.run.dir={run_dir}", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("initbench: error: No space left on device")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert not [p.name for p in run_dir.iterdir() if "tmp" in p.name], "partial files left"


# ----------------------------------------------------------------------------- 7. smaller ones


@pytest.mark.parametrize(
    "overrides",
    [["optimizer.lr=nan"], ["optimizer.lr=inf"], ["optimizer=sgd", "optimizer.momentum=nan"]],
)
def test_non_finite_config_values_are_config_errors(overrides):
    with pytest.raises(UserError, match=r"must be a finite number \(got (nan|inf)\)"):
        validate(compose_dict(overrides))


def test_non_finite_lr_is_refused_on_the_command_line(tmp_path):
    proc = run_train_cli("optimizer.lr=nan", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "initbench: error: optimizer.lr must be a finite number (got nan)\n"


def test_local_sweep_refuses_a_count_below_one(tmp_path):
    proc = run_cli(
        "scripts/local_sweep.py", "sweeps/circles.yaml", "--count", "-1", "--dry-run",
        "--out", str(tmp_path), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--count must be an integer >= 1 (got -1)" in proc.stderr


def test_the_recorded_error_line_is_the_cause_not_hydras_hint(tmp_path):
    log = tmp_path / "local_sweep.log"
    log.write_text(
        textwrap.dedent(
            """\
            $ python src/train.py init=bogus
            In 'train': Could not find 'init/bogus'

            Available options in 'init':
            \tkaiming
            Config search path:
            \tprovider=main, path=file:///repo/conf
            Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
            """
        )
    )
    assert _last_error_line(log) == "In 'train': Could not find 'init/bogus'"


def test_a_read_only_run_directory_is_one_line(tmpfs):
    run_dir = tmpfs("1m", readonly=True)
    for target in (run_dir, run_dir / "new-run"):
        proc = run_train_cli(*SMALL, f"hydra.run.dir={target}", timeout=120)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr
        assert proc.stderr.startswith(f"initbench: error: cannot write the run directory {target}")
        assert proc.stderr.count("\n") == 1


def test_a_second_ctrl_c_ends_as_interrupted(tmp_path, monkeypatch):
    """The second SIGINT raises KeyboardInterrupt wherever the run is (signals.py); here it
    lands at the 20th poll of the training loop."""
    polls = itertools.count(1)

    def second_ctrl_c():
        if next(polls) >= 20:
            raise KeyboardInterrupt
        return signal.SIGINT if False else None

    @contextmanager
    def fake_signals():
        yield second_ctrl_c

    monkeypatch.setattr(run_module, "stop_on_signals", fake_signals)
    with pytest.raises(Interrupted) as stop:
        train_here(tmp_path, "dataset.n_train=2000", "trainer.batch_size=32")
    assert stop.value.signum == signal.SIGINT
    assert "nothing saved since the last checkpoint" in str(stop.value)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"


def test_metrics_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails halfway keeps the previous metrics.jsonl whole."""
    calls = itertools.count(1)

    def failing_dumps(row):
        if next(calls) == 2:  # the first row of the second write (epoch 2)
            raise OSError(errno.EIO, "Input/output error")
        return dumps_strict(row)

    monkeypatch.setattr(run_module, "dumps_strict", failing_dumps)
    with pytest.raises(run_module.RunFailed, match="Input/output error"):
        train_here(tmp_path)
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["epoch"] == 1
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_the_report_skips_malformed_run_files_with_a_note(tmp_path):
    for name in ("good", "list", "types", "truncated", "config"):
        train_here(tmp_path / name)
    (tmp_path / "list" / "summary.json").write_text("[1, 2]")
    summary = json.loads((tmp_path / "types" / "summary.json").read_text())
    (tmp_path / "types" / "summary.json").write_text(json.dumps({**summary, "num_classes": "2"}))
    (tmp_path / "truncated" / "summary.json").write_text('{"status": "fini')
    (tmp_path / "config" / "config.yaml").write_text("model: 5\n")
    runset = load_local(tmp_path)
    assert list(runset.runs["run_id"]) == ["good"]
    (note,) = [n for n in runset.notes if n.startswith("malformed")]
    for expected in (
        "list: summary.json is a list",
        "types: summary.json: num_classes is '2'",
        "truncated: summary.json is not valid JSON",
        "config: config.yaml: model is 5",
    ):
        assert expected in note
    assert os.path.exists(tmp_path / "good" / "summary.json")


# ----------------------------------------------------------------------------- 8. strict JSON


def strict_json_files(run_dir):
    """Every JSON and JSON Lines file under ``run_dir``, parsed as standard JSON (bare NaN,
    Infinity and -Infinity fail the test, as JSON.parse and jq reject them)."""
    parsed = {}
    for path in sorted([*run_dir.rglob("*.json"), *run_dir.rglob("*.jsonl")]):

        def refuse(constant, path=path):
            pytest.fail(f"{path.name} holds a bare {constant}: not standard JSON")

        text = path.read_text()
        rel = str(path.relative_to(run_dir))
        if path.suffix == ".jsonl":
            parsed[rel] = [json.loads(line, parse_constant=refuse) for line in text.splitlines()]
        else:
            parsed[rel] = json.loads(text, parse_constant=refuse)
    return parsed


def val_loss_at(epoch_bad, value):
    """engine.evaluate, but the validation loss of epoch ``epoch_bad`` is ``value``."""
    real, calls = engine.evaluate, []

    def evaluate(*args, **kwargs):
        loss, acc = real(*args, **kwargs)
        calls.append(loss)
        return (value if len(calls) == epoch_bad else loss), acc

    return evaluate


def test_a_diverged_run_writes_standard_json_with_null_for_nonfinite(tmp_path):
    # std 1e30: every activation overflows, the loss is NaN at step 0
    summary = train_here(tmp_path, "init=normal", "init.std=1e30")
    assert summary["status"] == "diverged"
    files = strict_json_files(tmp_path)
    assert {"summary.json", "metrics.jsonl", "diagnose.json"} <= set(files)
    # the step-0 report's nulls are explained by its per-layer counts of non-finite elements
    layers = files["diagnose.json"]["layers"]
    assert any(layer["act_std"] is None for layer in layers)
    for layer in layers:
        assert layer["act_std"] is not None or layer["nonfinite"] > 0
        assert layer["grad_std"] is not None or layer["grad_nonfinite"] > 0


def test_a_nonfinite_validation_loss_is_null_and_final_keeps_the_last_finite_epoch(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(engine, "evaluate", val_loss_at(2, float("inf")))
    summary = train_here(tmp_path, "trainer.epochs=2")
    assert summary["status"] == "finished"  # the training loss stayed finite
    files = strict_json_files(tmp_path)
    first, second = files["metrics.jsonl"]
    assert second["val/loss"] is None and second["nonfinite"] == {"val/loss": "Infinity"}
    assert math.isfinite(second["train/loss"]) and "nonfinite" not in first
    # final: the last epoch whose metrics were all finite (epoch 1), not the inf
    expected = {k.replace("/", "_"): first[k] for k in ("train/loss", "train/acc", "val/loss",
                                                         "val/acc")}  # fmt: skip
    assert files["summary.json"]["final"] == expected == summary["final"]
    assert "nonfinite" not in files["summary.json"]
    # the readers take null for what it is: a non-finite value, not a missing epoch
    assert _last_metric(tmp_path, "val/loss") != _last_metric(tmp_path, "val/loss")  # NaN
    curves = load_local(tmp_path).curves
    assert list(curves["epoch"]) == [1, 2] and math.isnan(curves["val/loss"].iloc[1])


def test_strict_json_records_what_it_nulled():
    value = {"a": float("nan"), "b": [1.0, float("-inf")], "c": {"d": np.float32("inf")}, "e": 2}
    text = dumps_strict(value)
    assert json.loads(text, parse_constant=pytest.fail) == {
        "a": None, "b": [1.0, None], "c": {"d": None}, "e": 2,
        "nonfinite": {"a": "NaN", "b.1": "-Infinity", "c.d": "Infinity"},
    }  # fmt: skip
    assert to_strict_json([float("nan")]) == [None]  # no mapping to record it in


# ----------------------------------------------------------------------------- round three:
# hostile run files (a FIFO, a device, rows that are not objects, huge numbers, deep nesting)


def hostile(tmp_path, name: str, file: str, make) -> None:
    """A trained run ``name`` whose ``file`` is replaced by what ``make(path)`` puts there."""
    train_here(tmp_path / name)
    path = tmp_path / name / file
    path.unlink()
    make(path)


DEEP = "[" * 100_000 + "]" * 100_000  # deeper than any parser's recursion limit


def test_the_report_never_hangs_or_crashes_on_hostile_run_files(tmp_path):
    """Each run below is skipped with its reason (or its bad rows dropped); the report is built
    from the good run, at once: nothing blocks on a FIFO, reads /dev/zero without end, or
    recurses out of the stack."""
    train_here(tmp_path / "good")
    hostile(tmp_path, "fifo", "summary.json", os.mkfifo)
    hostile(tmp_path, "zero", "metrics.jsonl", lambda p: p.symlink_to("/dev/zero"))
    hostile(tmp_path, "deep", "summary.json", lambda p: p.write_text(DEEP))
    hostile(tmp_path, "deepyaml", "config.yaml", lambda p: p.write_text("a: " + "[" * 5000))
    hostile(tmp_path, "wide", "config.yaml",  # a billion-laughs alias bomb: 10^9 leaves
            lambda p: p.write_text("a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
                f"{c}: &{c} [*{p_},*{p_},*{p_},*{p_},*{p_},*{p_},*{p_},*{p_},*{p_},*{p_}]\n"
                for p_, c in zip("abcdefgh", "bcdefghi", strict=True))))  # fmt: skip
    rows_dir = tmp_path / "rows"
    train_here(rows_dir, "seed=1")  # not a repeat of "good", which the report would drop
    good_rows = (rows_dir / "metrics.jsonl").read_text()
    (rows_dir / "metrics.jsonl").write_text('[1, 2, 3]\n"text"\n' + good_rows + DEEP + "\n")
    huge = tmp_path / "huge"
    train_here(huge, "seed=2")
    summary = json.loads((huge / "summary.json").read_text())
    (huge / "summary.json").write_text(json.dumps({**summary, "epochs_completed": 10**30,
                                                   "wall_s": 1e308}))  # fmt: skip
    runset = load_local(tmp_path)
    assert sorted(runset.runs["run_id"]) == ["good", "rows"]
    assert len(runset.curves[runset.curves["run_id"] == "rows"]) == 2  # the object rows
    (note,) = [n for n in runset.notes if n.startswith("malformed")]
    for expected in (
        "fifo: summary.json is not a regular file",
        "zero: metrics.jsonl is not a regular file",
        "deep: summary.json nests deeper than 64 levels",
        "deepyaml: config.yaml nests deeper than 64 levels",
        "wide: config.yaml holds more than 1000000 values",
        "huge: summary.json: epochs_completed is 1000000000000000000000000000000",
    ):
        assert expected in note, note
    from initbench.report import build_report

    files = build_report(runset, tmp_path / "report", hist_schemes=0)
    assert files.summary_md.exists()


def test_the_sweep_runner_and_a_resume_refuse_hostile_files_in_one_line(tmp_path):
    sweep = tmp_path / "deep.yaml"
    sweep.write_text("method: grid\nparameters: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    proc = run_cli("scripts/local_sweep.py", str(sweep), "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "deep.yaml nests deeper than 64 levels" in proc.stderr
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    proc = run_cli("scripts/local_sweep.py", str(fifo), "--dry-run", timeout=60)
    assert proc.returncode == 2 and "fifo.yaml is not a regular file" in proc.stderr
    # a resume reads summary.json: a deep one is no summary (the run starts over, no traceback)
    run_dir = tmp_path / "run"
    train_here(run_dir, "trainer.epochs=1")
    (run_dir / "summary.json").write_text(DEEP)
    summary = train_here(run_dir, "trainer.epochs=2")
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    assert _last_metric(run_dir, "val/acc") is not None


@pytest.mark.parametrize("script", ["src/train.py", "src/diagnose.py", "src/pack.py"])
def test_a_double_dash_setting_is_refused_and_nothing_is_unpickled(tmp_path, script):
    """``--experiment=X`` (a W&B sweep file without ``command:`` passes ``--key=value``) was
    argparse's abbreviation of ``--experimental-rerun X``, which unpickles X."""
    bait = tmp_path / "payload.pkl"
    marker = tmp_path / "ran"
    bait.write_bytes(
        b"cos\\nsystem\\n(S'touch " + str(marker).encode() + b"'\\ntR."
    )  # a pickle that would run `touch <marker>`
    proc = run_cli(str(ROOT / script), f"--experiment={bait}", cwd=tmp_path)
    assert proc.returncode == 2 and not marker.exists()
    (line,) = proc.stderr.strip().splitlines()
    assert (
        "--experiment is not an option: settings are key=value overrides "
        f"(as an override: experiment={bait})"
    ) in line
    assert "${args_no_hyphens}" in line
    proc = run_cli(str(ROOT / script), "--epochs", "3", cwd=tmp_path)
    assert proc.returncode == 2 and "--epochs is not an option" in proc.stderr
    assert not list(tmp_path.glob("outputs"))  # nothing created


def test_run_and_sweep_files_are_never_written_through_a_planted_symlink(tmp_path):
    """diagnose.json/png, the sweep's combinations.json, a run's local_sweep.json and
    local_sweep.log are written through temp + rename or O_NOFOLLOW: a symlink in their place
    is replaced or refused, its target untouched; a .lock symlink is refused, not emptied."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("diagnose.json", "diagnose.png"):
        (run_dir / name).symlink_to(target)
    train_here(run_dir, "trainer.epochs=1")
    assert target.read_text() == "keep me"
    assert not (run_dir / "diagnose.json").is_symlink()
    assert json.loads((run_dir / "diagnose.json").read_text())["layers"]

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / ".lock").symlink_to(target)
    with pytest.raises(UserError, match="cannot write to the run directory"):
        train_here(locked, "trainer.epochs=1")
    assert target.read_text() == "keep me"

    from initbench.sweep.local import INDEX, LOG, RECORD

    sweep = tmp_path / "s.yaml"
    sweep.write_text(textwrap.dedent("""\
        name: s
        method: grid
        program: src/diagnose.py
        command: ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
        parameters:
          dataset: {value: circles}
          seed: {values: [0]}
    """))  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    (out / INDEX).symlink_to(target)
    combo = out / "dataset-circles__seed-0"
    combo.mkdir()
    (combo / RECORD).symlink_to(target)
    (combo / LOG).symlink_to(target)
    proc = run_cli("scripts/local_sweep.py", str(sweep), "--out", str(out))
    assert target.read_text() == "keep me"
    assert not (out / INDEX).is_symlink()
    assert json.loads((out / INDEX).read_text())["sweep"] == "s"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (combo / LOG).is_symlink() and not (combo / RECORD).is_symlink()
    assert json.loads((combo / RECORD).read_text())["status"] == "finished"


def test_sweep_values_are_checked_lazily_and_folder_names_never_collide(tmp_path):
    from initbench.sweep import combinations, load_sweep

    big = tmp_path / "big.yaml"
    big.write_text(
        textwrap.dedent("""\
        method: random
        program: src/train.py
        command: ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
        parameters:
          seed: {min: 0, max: 1000000000}
    """)
    )  # a billion seeds: drawn from, never listed
    combos = combinations(load_sweep(big), count=3)
    assert len(combos) == 3 and all(0 <= c.params["seed"] <= 10**9 for c in combos)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        textwrap.dedent("""\
        method: grid
        program: src/train.py
        command: ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
        parameters:
          seed: {min: 0, max: 1000000000}
          trainer.epochs: {values: [1, 2]}
    """)
    )
    head = combinations(load_sweep(grid), count=3)  # the head only, at once
    assert [c.params for c in head] == [{"seed": 0, "trainer.epochs": 1},
                                        {"seed": 0, "trainer.epochs": 2},
                                        {"seed": 1, "trainer.epochs": 1}]  # fmt: skip
    clash = tmp_path / "clash.yaml"
    clash.write_text(
        textwrap.dedent("""\
        method: grid
        program: src/train.py
        command: ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
        parameters:
          a: {values: ["1__b-2", "1"]}
          b: {values: ["3", "2__b-3"]}
    """)
    )
    combos = combinations(load_sweep(clash))
    assert len(combos) == 4  # "a-1__b-2__b-3" twice: both kept, the second hashed
    assert len({c.name for c in combos}) == 4


def test_a_sweep_file_without_command_is_refused_before_any_run(tmp_path):
    sweep = tmp_path / "nocommand.yaml"
    sweep.write_text("method: grid\nprogram: src/train.py\nparameters:\n  seed: {values: [0]}\n")
    proc = run_cli("scripts/local_sweep.py", str(sweep), "--dry-run", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no command: (W&B's default) passes --key=value" in proc.stderr
    assert "${args_no_hyphens}" in proc.stderr and not (tmp_path / "o").exists()


def test_a_pack_listing_one_folder_twice_and_an_out_with_a_comma_are_one_line(tmp_path):
    a = tmp_path / "a"
    proc = run_cli("src/pack.py", "dataset=circles", "logger=tensorboard",
                   "pack.inits=[zeros,ones]", "pack.seeds=[0]",
                   f"pack.dirs=[{a},{tmp_path / 'b' / '..' / 'a'}]",
                   f"hydra.run.dir={tmp_path / 'pack'}")  # fmt: skip
    assert proc.returncode == 2 and "pack.dirs names one folder twice" in proc.stderr
    assert "in use by" not in proc.stderr
    sweep = ROOT / "sweeps" / "circles.yaml"
    proc = run_cli(
        "scripts/local_sweep.py", str(sweep), "--dry-run", "--out", str(tmp_path / "x,y")
    )
    assert proc.returncode == 2 and "holds ',' or '='" in proc.stderr


def test_a_full_disk_says_which_members_could_not_be_recorded():
    """The summary.json of a pack's members is written on a full disk too, or not: the message
    claims "recorded as failed" only for those it could write."""
    from pathlib import Path

    from initbench.errors import RunFailed
    from initbench.run import recording_early_ends

    class Member:
        def __init__(self, name, writable):
            self.run_dir, self.writable, self.fields = Path("/pack") / name, writable, None

        def _stop(self, **fields):
            self.fields = fields
            return self.writable

    members = [Member("a", True), Member("b", False)]
    with pytest.raises(RunFailed) as err:
        with recording_early_ends(lambda: members, Path("/pack"), "; recorded as failed"):
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(err.value)
    assert message.startswith("No space left on device; 1 summary.json file(s) could not be")
    assert "still say running (/pack/b)" in message and "recorded as failed" not in message
    assert members[0].fields["status"] == "failed"
    with pytest.raises(RunFailed, match="; recorded as failed$"):
        with recording_early_ends(lambda: members[:1], Path("/pack"), "; recorded as failed"):
            raise OSError(errno.ENOSPC, "No space left on device")
