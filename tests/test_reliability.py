"""Reliability: resume after a stop or a kill with identical results, corrupt checkpoints,
signals, unwritable run directories, one process per run directory, atomic writes, and W&B
without a server."""

import errno
import itertools
import json
import logging
import os
import re
import signal
import socket
import time
from contextlib import contextmanager

import pytest
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import ROOT, compose_dict, finish, run_cli, run_train_cli, start, write_cifar
from initbench import checkpoint as checkpoint_module
from initbench import lock as lock_module
from initbench import run as run_module
from initbench.checkpoint import load_checkpoint, save_checkpoint
from initbench.diagnose import run_diagnose
from initbench.errors import Interrupted, RunFailed, UserError
from initbench.io import atomic_write, temp_path, write_json_atomic
from initbench.lock import hold_run_dir
from initbench.run import run
from initbench.signals import StopNow, stop_on_signals

# Enough steps per epoch (63) that a stop lands mid-epoch; dropout exercises the torch RNG.
RESUME_OVERRIDES = [
    "dataset=circles",
    "dataset.n_train=2000",
    "trainer.batch_size=32",
    "trainer.epochs=3",
    "trainer.device=cpu",
    "model.width=32",
    "model.dropout=0.2",
    "logger=tensorboard",
]


def run_in_process(run_dir, overrides=(), stop_at_poll=None, monkeypatch=None, base=None):
    """Run in this process; with ``stop_at_poll=n``, a SIGTERM is "received" at the n-th time
    the loop polls for signals (after every step and every epoch end)."""
    cfg = compose_dict((RESUME_OVERRIDES if base is None else base) + list(overrides))
    if stop_at_poll is not None:
        polls = itertools.count(1)

        @contextmanager
        def fake_signals():
            yield lambda: signal.SIGTERM if next(polls) >= stop_at_poll else None

        monkeypatch.setattr(run_module, "stop_on_signals", fake_signals)
    return run(cfg, run_dir, make_optimizer=instantiate(cfg["optimizer"]))


def metrics_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    summary = run_in_process(run_dir)
    return summary, metrics_rows(run_dir)


@pytest.mark.parametrize("stop_after", [1, 40, 63, 100])
def test_stop_then_resume_gives_identical_metrics(tmp_path, monkeypatch, reference, stop_after):
    ref_summary, ref_rows = reference
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=stop_after, monkeypatch=monkeypatch)
    stopped = json.loads((tmp_path / "summary.json").read_text())
    assert stopped["status"] == "interrupted"
    assert 0 < stopped["global_step"] <= stop_after
    assert load_checkpoint(tmp_path)["train_state"]["global_step"] == stopped["global_step"]
    monkeypatch.undo()
    resumed = run_in_process(tmp_path)
    assert resumed["status"] == "finished"
    assert resumed["final"] == ref_summary["final"]  # exact, not approximate
    assert resumed["best_val_acc"] == ref_summary["best_val_acc"]
    assert metrics_rows(tmp_path) == ref_rows
    # TensorBoard: one value per epoch, no step written twice across the two processes.
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("val/acc")]
    assert steps == [row["step"] for row in ref_rows]


def test_finished_run_is_not_run_again(tmp_path):
    first = run_in_process(tmp_path, ["trainer.epochs=1"])
    again = run_in_process(tmp_path, ["trainer.epochs=1"])
    assert again == json.loads(json.dumps(first))


def test_more_epochs_on_a_stopped_run_continue_it(tmp_path, monkeypatch, reference):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=70, monkeypatch=monkeypatch)
    monkeypatch.undo()
    resumed = run_in_process(tmp_path)  # same config; epochs may differ from the stopped run's
    assert resumed["final"] == reference[0]["final"]


def test_resume_may_change_the_memory_limit(tmp_path, monkeypatch, reference):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=5, monkeypatch=monkeypatch)
    monkeypatch.undo()
    resumed = run_in_process(tmp_path, ["trainer.memory_limit_gb=50"])
    assert resumed["final"] == reference[0]["final"]


def test_resume_with_another_config_is_refused(tmp_path, monkeypatch):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=5, monkeypatch=monkeypatch)
    monkeypatch.undo()
    with pytest.raises(
        UserError, match=r"different config \(.*init.name: 'pytorch_default' -> 'kaiming'"
    ):
        run_in_process(tmp_path, ["init=kaiming"])
    fresh = run_in_process(tmp_path, ["init=kaiming", "resume=false", "trainer.epochs=1"])
    assert fresh["status"] == "finished" and fresh["choices"]["init"] == "kaiming"


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, reference):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=100, monkeypatch=monkeypatch)
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.prev.pt").exists()  # epoch 1's, kept when step 100 was saved
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a torn write
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a file")  # a kill mid-save leaves this
    assert load_checkpoint(tmp_path)["train_state"]["epoch"] == 1
    resumed = run_in_process(tmp_path)
    assert resumed["final"] == reference[0]["final"]


def test_every_checkpoint_corrupt_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=3, monkeypatch=monkeypatch)
    monkeypatch.undo()
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match=r"no usable checkpoint .*delete checkpoint.pt"):
        run_in_process(tmp_path)


def test_unwritable_run_directory_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write to the run directory"):
        run_in_process(blocker / "run")


def test_disk_full_never_leaves_a_summary_that_claims_success(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(RunFailed, match="No space left"):
        run_in_process(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "No space left on device" in summary["error"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["init=normal", "init.std=-1"], "std"),
        (["init=uniform", "init.a=2", "init.b=1"], "init.a must be <= b"),
        (["model=cnn30", "dataset=circles"], "needs image input"),
        (["init=delta_orthogonal", "model=cnn", "model.channels=1", "dataset=cifar10"], "c_in"),
    ],
)
def test_impossible_inits_and_shapes_fail_before_training(tmp_path, overrides, message):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=4, n_test=4)
    with pytest.raises(UserError, match=message):
        run_in_process(
            tmp_path / "run",
            [*overrides, f"data_dir={tmp_path / 'data'}"],
            base=["trainer.device=cpu", "logger=tensorboard", "dataset=circles"],
        )
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def start_cli(run_dir, *extra):
    args = [f"hydra.run.dir={run_dir}", *RESUME_OVERRIDES, "trainer.epochs=200", *extra]
    return start(["src/train.py", *args])


def wait_for(path, proc):
    """Until ``path`` exists; fails at once, with the child's output, if ``proc`` ends first.
    A hang is pytest-timeout's to report (pyproject.toml), with this stack."""
    while not path.exists():
        if proc.poll() is not None:
            done = finish(proc, timeout=10)
            pytest.fail(f"the run ended before {path.name} appeared:\n{done.stderr[-4000:]}")
        time.sleep(0.1)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_cleanly_with_a_checkpoint(tmp_path, sig, code):
    proc = start_cli(tmp_path)
    wait_for(tmp_path / "checkpoint.pt", proc)
    proc.send_signal(sig)
    done = finish(proc, timeout=120)
    out, err = done.stdout, done.stderr
    assert done.returncode == code, err
    assert "Traceback" not in out + err
    assert f"stopped by {signal.Signals(sig).name}; checkpoint saved" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["train_state"]["global_step"] == summary["global_step"]


def test_a_signal_before_the_flag_is_polled_stops_at_once():
    with stop_on_signals():
        with pytest.raises(StopNow) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        assert stop.value.signum == signal.SIGTERM
    with stop_on_signals() as received:
        assert received() is None  # the training loop polls: from now on a signal is a flag
        os.kill(os.getpid(), signal.SIGTERM)
        assert received() == signal.SIGTERM


def test_a_stop_before_a_resumed_run_trains_keeps_its_checkpoint(tmp_path, monkeypatch):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=5, monkeypatch=monkeypatch)
    monkeypatch.undo()
    saved = (tmp_path / "checkpoint.pt").read_bytes()

    def slow_prepare(cfg):
        raise StopNow(signal.SIGTERM)  # as the handler does when a signal arrives in prepare

    monkeypatch.setattr(run_module, "prepare", slow_prepare)
    with pytest.raises(Interrupted, match="before training resumed; the checkpoint in .* is as"):
        run_in_process(tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == saved
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] == 5


# A slow start-up: LSUV rescales the 301 layers of a 300-deep MLP one by one, each time with
# a forward pass; 100 rounds each (tol can never be met) make it minutes on any CPU.
SLOW_START = ["init=lsuv", "init.tol=1e-9", "init.max_iters=100", "model.depth=300"]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_slow_start_up_stops_within_seconds(tmp_path, sig, code):
    proc = start_cli(tmp_path, *SLOW_START)
    wait_for(tmp_path / "config.yaml", proc)  # written just before the data load and LSUV
    time.sleep(2)
    proc.send_signal(sig)
    sent = time.monotonic()
    done = finish(proc, timeout=60)  # before: LSUV ran to its end, then a step, then the stop
    assert time.monotonic() - sent < 15
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    name = signal.Signals(sig).name
    assert f"stopped by {name} before training started: no checkpoint yet" in done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "nothing to resume" in summary["error"]
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.slow
def test_unreachable_wandb_server_finishes_offline_within_bound(tmp_path):
    start = time.monotonic()
    proc = run_train_cli(
        f"hydra.run.dir={tmp_path}",
        *RESUME_OVERRIDES[:-1],
        "trainer.epochs=1",
        "logger=wandb",
        env={
            "WANDB_MODE": "online",
            "WANDB_API_KEY": "x" * 40,
            "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens on the discard port
        },
        timeout=180,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "W&B is unavailable" in proc.stdout + proc.stderr
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert elapsed < 90, f"took {elapsed:.0f} s"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimizer.lr=-1"], "optimizer: Invalid learning rate: -1"),
        (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer: Invalid momentum value: -1"),
    ],
)
def test_bad_optimizer_values_fail_before_any_data(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        run_in_process(tmp_path, overrides)
    assert not (tmp_path / "summary.json").exists()


def test_missing_data_is_recorded_as_a_failed_run(tmp_path):
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        run_in_process(
            tmp_path / "run",
            ["dataset=cifar10", "dataset.download=false", f"data_dir={tmp_path / 'empty'}"],
            base=["trainer.device=cpu", "logger=tensorboard"],
        )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "CIFAR-10 not found" in summary["error"]


def test_a_finished_run_is_extended_by_more_epochs(tmp_path, reference):
    first = run_in_process(tmp_path, ["trainer.epochs=1"])
    assert first["epochs_completed"] == 1
    extended = run_in_process(tmp_path)  # trainer.epochs=3, as the reference
    assert extended["epochs_completed"] == 3
    assert extended["final"] == reference[0]["final"]
    assert metrics_rows(tmp_path) == reference[1]


def test_a_stop_after_a_divergence_records_the_divergence(tmp_path, monkeypatch):
    summary = run_in_process(
        tmp_path, ["init=normal", "init.std=1e30"], stop_at_poll=3, monkeypatch=monkeypatch
    )
    assert summary["status"] == "diverged" and summary["diverged_at_step"] == 0


# ----------------------------------------------------------------------------- one process per run


@pytest.mark.timeout(900)  # past the first run's own 600 s timeout, which shows its stack
def test_a_second_process_on_a_run_directory_is_refused_at_once(tmp_path):
    """Two processes on one run directory would mix their files: the second is refused (one
    line, exit 2, naming the first), and the first ends as if it had been alone."""
    epochs = 100  # long enough for the second to start while the first trains
    first = start_cli(tmp_path, f"trainer.epochs={epochs}")
    wait_for(tmp_path / "checkpoint.pt", first)
    config = (tmp_path / "config.yaml").read_text()
    second = run_train_cli(
        f"hydra.run.dir={tmp_path}", *RESUME_OVERRIDES, f"trainer.epochs={epochs}"
    )
    assert second.returncode == 2, second.stdout + second.stderr
    assert first.poll() is None, "the first run ended before the second was refused: lengthen it"
    assert second.stderr.splitlines() == [second.stderr.strip()]  # one line, no traceback
    assert re.fullmatch(
        rf"initbench: error: {re.escape(str(tmp_path))} is in use by pid {first.pid} on "
        rf"{re.escape(socket.gethostname())} \(started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d: "
        rf"python\S* src/train.py hydra.run.dir={re.escape(str(tmp_path))} .*\); "
        r"wait for it or use another run directory",
        second.stderr.strip(),
    ), second.stderr
    done = finish(first, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == epochs
    assert [row["epoch"] for row in metrics_rows(tmp_path)] == list(range(1, epochs + 1))
    assert load_checkpoint(tmp_path)["train_state"]["epoch"] == epochs
    assert (tmp_path / "config.yaml").read_text() == config
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (tmp_path / ".lock").read_text() == ""  # released: nobody works here now


def test_the_lock_file_of_a_killed_run_does_not_block_its_resumption(tmp_path):
    first = start_cli(tmp_path)
    wait_for(tmp_path / "checkpoint.pt", first)
    first.kill()
    finish(first, timeout=60)
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == first.pid  # left behind
    again = run_train_cli(f"hydra.run.dir={tmp_path}", *RESUME_OVERRIDES)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout + again.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"
    assert not list(tmp_path.glob(".*.tmp"))  # a save the kill cut short is cleared away


def test_a_held_run_directory_is_refused_before_anything_is_read_or_written(tmp_path):
    holder = rf"pid {os.getpid()} on {re.escape(socket.gethostname())} \(started .*\)"
    with hold_run_dir(tmp_path):
        with pytest.raises(UserError, match=rf"is in use by {holder}; wait for it"):
            run_in_process(tmp_path)
        with pytest.raises(UserError, match=rf"is in use by {holder}; wait for it"):
            run_diagnose(compose_dict(["dataset=circles"], config_name="diagnose"), tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]
    assert (tmp_path / ".lock").read_text() == ""


def test_taking_the_lock_clears_temp_files_a_killed_writer_left(tmp_path):
    left = temp_path(tmp_path / "checkpoint.pt")
    left.write_bytes(b"half a checkpoint")
    (tmp_path / ".notes.tmp").write_text("not one of ours")
    with hold_run_dir(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".notes.tmp"]


def test_without_flock_the_run_goes_on_with_a_warning(tmp_path, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING), hold_run_dir(tmp_path):
        pass
    assert "nothing stops a second process" in caplog.text


# ----------------------------------------------------------------------------- atomic writes


def test_two_writers_of_one_file_never_share_a_temp_file(tmp_path):
    path = tmp_path / "summary.json"
    with atomic_write(path) as a, atomic_write(path) as b:
        assert a.name != b.name
        a.write("first")
        b.write("second")
    assert path.read_text() == "first"  # the last to finish wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failing_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    write_json_atomic(tmp_path / "summary.json", {"status": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "summary.json", {"status": "finished", "x": object()})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "running"}

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, {})
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ------------------------------------------------------------------------- what a resume may change

# One short epoch: the resume matrix runs many interrupted runs.
MATRIX_OVERRIDES = [o for o in RESUME_OVERRIDES if not o.startswith("trainer.epochs")] + [
    "trainer.epochs=1"
]


@pytest.mark.parametrize(
    "change, difference",
    [
        ("seed=1", "seed: 0 -> 1"),
        ("optimizer.lr=0.01", "optimizer.lr: 0.001 -> 0.01"),
        ("optimizer=sgd", "optimizer._target_: 'torch.optim.Adam' -> 'torch.optim.SGD'"),
        ("model.width=16", "model.width: 32 -> 16"),
        ("dataset.noise=0.1", "dataset.noise: 0.05 -> 0.1"),
        ("init.bias=0.01", "init.bias: 'default' -> 0.01"),
        ("activation=tanh", "activation.name: 'relu' -> 'tanh'"),
    ],
)
def test_resuming_with_a_change_to_the_results_is_refused(
    tmp_path, monkeypatch, change, difference
):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=5, monkeypatch=monkeypatch, base=MATRIX_OVERRIDES)
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"different config \(.*" + re.escape(difference)):
        run_in_process(tmp_path, [change], base=MATRIX_OVERRIDES)
    # nothing was overwritten: the interrupted run still resumes as it was
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "interrupted"


@pytest.fixture(scope="module")
def matrix_reference(tmp_path_factory):
    return run_in_process(tmp_path_factory.mktemp("matrix"), base=MATRIX_OVERRIDES)


@pytest.mark.parametrize(
    "change",
    [
        "trainer.num_threads=1",
        "logger=wandb",
        "telemetry.every_n_steps=7",
        "telemetry.enabled=false",
        "diagnose.samples=2",
        "diagnose.at_start=false",
        "data_dir=elsewhere",
    ],
)
def test_resuming_with_a_change_that_keeps_the_results_continues(
    tmp_path, monkeypatch, matrix_reference, change
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=5, monkeypatch=monkeypatch, base=MATRIX_OVERRIDES)
    stopped_at = load_checkpoint(tmp_path)["train_state"]["global_step"]
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")
    resumed = run_in_process(tmp_path, [change], base=MATRIX_OVERRIDES)
    assert resumed["status"] == "finished"
    assert 0 < stopped_at < resumed["global_step"]
    assert resumed["final"] == matrix_reference["final"]  # continued, exactly


def test_resuming_with_more_epochs_continues(tmp_path, monkeypatch):
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, stop_at_poll=5, monkeypatch=monkeypatch, base=MATRIX_OVERRIDES)
    monkeypatch.undo()
    resumed = run_in_process(tmp_path, ["trainer.epochs=2"], base=MATRIX_OVERRIDES)
    assert resumed["status"] == "finished" and resumed["epochs_completed"] == 2


def test_a_resumed_run_keeps_its_wandb_run_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb = ["logger=wandb"]
    with pytest.raises(Interrupted):
        run_in_process(
            tmp_path, wandb, stop_at_poll=5, monkeypatch=monkeypatch, base=MATRIX_OVERRIDES
        )
    first_id = json.loads((tmp_path / "summary.json").read_text())["wandb_run_id"]
    assert first_id and load_checkpoint(tmp_path)["wandb_run_id"] == first_id
    monkeypatch.undo()
    monkeypatch.setenv("WANDB_MODE", "offline")
    resumed = run_in_process(tmp_path, wandb, base=MATRIX_OVERRIDES)
    assert resumed["status"] == "finished"
    assert resumed["wandb_run_id"] == first_id
    assert json.loads((tmp_path / "summary.json").read_text())["wandb_run_id"] == first_id
    assert load_checkpoint(tmp_path)["wandb_run_id"] == first_id
    # W&B writes one offline folder per process, offline-run-<date>_<time>-<run id>, with a
    # "-1" suffix when both processes start within the same second
    folders = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    ids = {re.fullmatch(r"offline-run-\d{8}_\d{6}-(\w+?)(-\d+)?", n).group(1) for n in folders}
    assert ids == {first_id}


@pytest.mark.parametrize("signum, marked", [(signal.SIGTERM, 1), (signal.SIGINT, 0)])
def test_a_sigterm_marks_the_wandb_run_preempting(tmp_path, monkeypatch, signum, marked):
    """SIGTERM (a W&B agent's or SLURM's preemption) marks the W&B run preempting, so the agent
    requeues it; Ctrl-C does not."""
    from initbench.telemetry import sinks

    monkeypatch.setenv("WANDB_MODE", "offline")
    calls = []
    monkeypatch.setattr(sinks.WandbSink, "mark_preempting", lambda self: calls.append(self.run.id))
    polls = itertools.count(1)

    @contextmanager
    def fake_signals():
        yield lambda: signum if next(polls) >= 5 else None

    monkeypatch.setattr(run_module, "stop_on_signals", fake_signals)
    with pytest.raises(Interrupted):
        run_in_process(tmp_path, ["logger=wandb"], base=MATRIX_OVERRIDES)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert calls == [summary["wandb_run_id"]] * marked


@pytest.mark.slow
@pytest.mark.parametrize("pack", [False, True], ids=["run", "pack"])
def test_chaos_script_kills_resumes_and_finds_identical_results(tmp_path, pack):
    # 10 short epochs; with --seed 5 both kills are aimed a fifth or more into training, so
    # most times the run resumes from a checkpoint written before a kill (how far it got
    # depends on the machine's load, so that is not asserted). --pack: a pack of 6 members,
    # each compared with its member of an uninterrupted pack.
    small = ["dataset.n_train=1000"]
    proc = run_cli(
        "scripts/chaos.py", *(["--pack"] if pack else []),
        *("--kills", "2", "--seed", "5", "--out", str(tmp_path / "chaos"), *small),
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "chaos: kill 2/2" in proc.stdout or "the run finished" in proc.stdout
    assert "chaos: IDENTICAL final metrics and per-epoch history" in proc.stdout
    if pack:  # every member compared
        assert proc.stdout.count("resumed   final") == 6


# --------------------------------------------------------------------------- resume by re-running


def test_ctrl_c_then_the_same_command_resumes_the_run_in_its_folder(tmp_path):
    """No hydra.run.dir: the default folder is time-stamped, yet the same command run again
    finds the interrupted run (same config) and resumes it there, and run once more says it is
    done; another config — more epochs included —, or resume=false, gets a folder of its own."""
    same = [str(ROOT / "src/train.py"), *RESUME_OVERRIDES, "trainer.epochs=60"]
    first = start(same, cwd=tmp_path)
    outputs = tmp_path / "outputs"
    deadline = time.monotonic() + 120
    while not list(outputs.glob("*/*/checkpoint.pt")):
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    stopped = finish(first, timeout=120)
    assert stopped.returncode == 130, "the run ended before the SIGINT: lengthen it"
    (folder,) = [p.parent for p in outputs.glob("*/*/config.yaml")]
    assert "Run the same command again to continue: it finds this folder" in stopped.stderr
    assert f"hydra.run.dir={folder}" in stopped.stderr

    def again(*extra):
        return run_cli(*same, *extra, cwd=tmp_path)

    resumed = again()
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(rf"resuming {re.escape(str(folder))}: \d+ epochs? done; epoch \d+ ",
                     resumed.stdout)  # fmt: skip
    assert [p.parent for p in outputs.glob("*/*/config.yaml")] == [folder]
    assert json.loads((folder / "summary.json").read_text())["status"] == "finished"
    done = again()
    assert f"run {folder} is already finished; nothing to do" in done.stdout
    time.sleep(1.1)  # a new folder's name has the second it starts in
    runs = [
        again("trainer.epochs=61"),  # a longer run is another run: a new folder
        again("model.width=16"),  # another config: a new folder
        again("resume=false"),
    ]  # the same config, asked to start over: a new folder
    assert all(r.returncode == 0 for r in runs)
    folders = sorted(p.parent for p in outputs.glob("*/*/config.yaml"))
    assert len(folders) == 4 and folder in folders


def test_a_folder_another_process_holds_is_not_taken(tmp_path):
    from initbench.config import previous_run

    cfg = compose_dict(RESUME_OVERRIDES)
    folder = tmp_path / "2026-12-08" / "10-00-00-name"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    assert previous_run(tmp_path, "10-00-01", "name", cfg) == folder
    assert previous_run(tmp_path, "10-00-01", "other-name", cfg) is None
    assert previous_run(tmp_path, "10-00-01", "name", {**cfg, "seed": 1}) is None
    with hold_run_dir(folder):
        assert lock_module.in_use(folder)
        assert previous_run(tmp_path, "10-00-01", "name", cfg) is None
    assert not lock_module.in_use(folder)


@pytest.mark.parametrize(
    "epoch, step_in_epoch, global_step, expected",
    [(0, 19, 19, "0 epochs done; epoch 1 goes on from its step 20 (19 steps done in all)"),
     (3, 0, 96, "3 epochs done; epoch 4 starts (96 steps done in all)"),
     (1, 5, 37, "1 epoch done; epoch 2 goes on from its step 6 (37 steps done in all)")],
)  # fmt: skip
def test_the_resume_line_says_how_far_the_run_got(epoch, step_in_epoch, global_step, expected):
    from initbench.engine import TrainState

    state = TrainState(epoch=epoch, step_in_epoch=step_in_epoch, global_step=global_step)
    assert run_module.resume_point(state) == expected
