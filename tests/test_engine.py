"""engine.py in-process, against a plain loop written out here: what an epoch records, when a
divergence is found and what it keeps, stopping and continuing mid-epoch, and the observer's
calls. (Runs end to end: tests/test_train.py, tests/test_trust.py.)"""

import copy
import functools
import io
import logging
import math
import re
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initbench.data import DeviceDataset
from initbench.engine import (
    DIVERGENCE_CHECK_EVERY,
    Callback,
    TrainState,
    autocast_context,
    evaluate,
    fit,
    record_epoch,
    to_memory_format,
    train,
)

N_TRAIN, N_TEST, BATCH = 800, 90, 8  # 100 steps an epoch: two divergence checks in each


@functools.cache
def data() -> DeviceDataset:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=g) * 0.6  # overlapping: accuracy ~0.8

    def split(n):
        y = torch.randint(0, 3, (n,), generator=g)
        return centers[y] + torch.randn(n, 6, generator=g), y

    (train_x, train_y), (test_x, test_y) = split(N_TRAIN), split(N_TEST)
    return DeviceDataset("blobs", train_x, train_y, test_x, test_y, (6,), 3)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def sgd(m: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)


def reference(m: nn.Module, epochs: int, seed: int = 1) -> list[dict]:
    """The loop engine.train must equal: per-example sums over each epoch, then the test split."""
    opt, g, rows = sgd(m), torch.Generator().manual_seed(seed), []
    for epoch in range(1, epochs + 1):
        m.train()
        loss_sum, correct = 0.0, 0
        for x, y in data().batches("train", BATCH, g):
            logits = m(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
        m.eval()
        with torch.no_grad():
            logits = m(data().test_x)
        rows.append({
            "train/loss": loss_sum / N_TRAIN, "train/acc": correct / N_TRAIN,
            "val/loss": float(F.cross_entropy(logits, data().test_y)),
            "val/acc": int((logits.argmax(1) == data().test_y).sum()) / N_TEST, "epoch": epoch,
        })  # fmt: skip
    return rows


class Sink:
    def __init__(self):
        self.logged = []

    def log_scalars(self, metrics, step):
        self.logged.append((dict(metrics), step))


def run(m: nn.Module, epochs: int, seed: int = 1, batch_size: int = BATCH, **kwargs) -> TrainState:
    generator = torch.Generator().manual_seed(seed)
    return train(m, data(), sgd(m), epochs=epochs, batch_size=batch_size, generator=generator,
                 eval_batch_size=32, **kwargs)  # fmt: skip


def engine_messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "initbench.engine"
            and r.levelno == level]  # fmt: skip


def close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-5) for k in a)


def test_each_epoch_is_the_plain_loops_and_is_recorded_everywhere():
    m, ref_model = model(), model()
    sink, ends = Sink(), []
    state = run(m, 3, sink=sink, on_epoch_end=lambda s: ends.append((s.epoch, s.status)))
    expected = reference(ref_model, 3)
    steps = N_TRAIN // BATCH
    assert state.status == "finished" and state.epoch == 3 and state.global_step == 3 * steps
    assert state.step_in_epoch == 0 and state.diverged_at_step is None
    assert [row["step"] for row in state.history] == [steps, 2 * steps, 3 * steps]
    for row, want in zip(state.history, expected, strict=True):
        assert close({k: v for k, v in row.items() if k != "step"}, want)
        # per-example losses (batch mean x batch size) summed in float64 in batch order, as the
        # plain loop does in Python floats: equal to the last bit (a float32 sum is not)
        assert row["train/loss"] == want["train/loss"]
    assert [step for _, step in sink.logged] == [steps, 2 * steps, 3 * steps]
    assert all(close(got, want) for (got, _), want in zip(sink.logged, expected, strict=True))
    assert ends == [(1, "running"), (2, "running"), (3, "running")]
    final = {k.replace("/", "_"): v for k, v in expected[-1].items() if k != "epoch"}
    assert close(state.final, final)
    assert state.best_val_acc == max(r["val/acc"] for r in expected)
    assert expected[0]["train/loss"] > expected[-1]["train/loss"]  # it learns: the sums move
    for p, q in zip(m.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_each_epoch_is_logged_in_one_line_with_its_metrics_and_time(caplog):
    caplog.set_level(logging.INFO, logger="initbench.engine")
    start = time.perf_counter()
    state = run(model(), 2)
    took = time.perf_counter() - start
    lines = [s for s in engine_messages(caplog, logging.INFO) if "  train loss " in s]
    assert len(lines) == 2
    for line, row in zip(lines, state.history, strict=True):
        want = (
            f"epoch {row['epoch']}/2  train loss {row['train/loss']:.4f} acc "
            f"{row['train/acc']:.4f}  val loss {row['val/loss']:.4f} acc {row['val/acc']:.4f}"
        )
        assert line.startswith(want + "  (")
        seconds = float(re.fullmatch(r".*\((\d+\.\d\d) s\)", line).group(1))
        assert 0 <= seconds <= took + 0.05


def test_an_epochs_progress_lines_name_it_and_a_resumed_epoch_counts_on(caplog, monkeypatch):
    monkeypatch.setenv("INITBENCH_PROGRESS_S", "0")  # a line after every step ...
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # ... when not on a terminal (pytest -s)
    caplog.set_level(logging.INFO, logger="initbench.engine")
    steps = N_TRAIN // BATCH
    state = run(model(), 2, should_stop=stop_after(37))
    lines = [s for s in engine_messages(caplog, logging.INFO) if s.startswith("epoch 1/2: ")]
    assert lines[0].startswith(f"epoch 1/2: 1/{steps} steps (1%), ")
    caplog.clear()
    run(model(), 2, state=state)
    lines = [s for s in engine_messages(caplog, logging.INFO) if ": " in s and " steps (" in s]
    assert lines[0].startswith(f"epoch 1/2: 38/{steps} steps (38%), ")
    assert lines[-1].startswith(f"epoch 2/2: {steps}/{steps} steps (100%), ")


def test_an_epoch_with_a_metric_not_finite_says_so_and_keeps_the_earlier_final(caplog):
    state = TrainState()
    good = {"train/loss": 1.0, "train/acc": 0.5, "val/loss": 1.0, "val/acc": 0.5, "epoch": 1}
    record_epoch(state, good, None)
    record_epoch(state, {**good, "val/loss": float("nan"), "epoch": 2}, None)
    assert engine_messages(caplog, logging.WARNING) == [
        "epoch 2: a metric is not finite; final keeps the last finite epoch"
    ]
    assert state.final["val_loss"] == 1.0 and state.epoch == 2 and len(state.history) == 2


class Layouts(nn.Module):
    """A linear classifier of 2x3x3 images that notes the memory layout of what it is fed."""

    def __init__(self):
        super().__init__()
        self.linear, self.seen = nn.Linear(18, 3), set()

    def forward(self, x):
        layout = "channels_last" if not x.is_contiguous() else "contiguous"
        self.seen.add(("train" if self.training else "eval", layout))
        return self.linear(x.flatten(1))


@functools.cache
def images() -> DeviceDataset:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 2, 3, 3, generator=g), torch.randint(0, 3, (64,), generator=g)
    return DeviceDataset("tiny-images", x[:48], y[:48], x[48:], y[48:], (2, 3, 3), 3)


@pytest.mark.parametrize("channels_last", [None, False, True])
def test_channels_last_feeds_training_and_evaluation_in_that_layout_and_only_when_asked(
    channels_last,
):
    m = Layouts()
    kwargs = {} if channels_last is None else {"channels_last": channels_last}
    train(m, images(), sgd(m), epochs=1, batch_size=16, generator=torch.Generator(), **kwargs)
    layout = "channels_last" if channels_last else "contiguous"
    assert m.seen == {("train", layout), ("eval", layout)}


def test_bf16_on_a_cpu_trains_exactly_as_fp32():
    a, b = model(), model()
    fp32, bf16 = run(a, 1), run(b, 1, precision="bf16")
    assert bf16.history == fp32.history
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_best_val_acc_is_the_best_epoch_not_the_last():
    state = TrainState()
    for epoch, acc in [(1, 0.5), (2, 0.7), (3, 0.6)]:
        metrics = {"train/loss": 1.0, "train/acc": 0.5, "val/loss": 1.0, "val/acc": acc}
        record_epoch(state, {**metrics, "epoch": epoch}, None)
    assert state.best_val_acc == 0.7 and state.final["val_acc"] == 0.6 and state.epoch == 3


def test_evaluate_is_the_mean_over_the_whole_test_split_in_any_batch_size():
    m = model()
    with torch.no_grad():
        logits = m(data().test_x)
    loss = float(F.cross_entropy(logits, data().test_y))
    acc = int((logits.argmax(1) == data().test_y).sum()) / N_TEST
    for batch_size in (7, 32, 1024):  # 90 = 12 x 7 + 6: a short last batch counts by its size
        got_loss, got_acc = evaluate(m, data(), batch_size)
        assert math.isclose(got_loss, loss, rel_tol=1e-6) and got_acc == acc
    m.train()
    evaluate(m, data(), 32)
    assert not m.training  # evaluation runs in eval mode (dropout off)


class Poison(nn.Module):
    """From training forward number ``at`` on, the logits become ``value`` (inf or NaN)."""

    def __init__(self, at: int, value: float):
        super().__init__()
        self.at, self.value, self.calls = at, value, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > self.at:
                return x * self.value
        return x


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -float("inf")])
@pytest.mark.parametrize("bad_step", [130, 149, 150, 199])
def test_a_divergence_mid_training_is_found_at_the_next_check_and_keeps_the_last_finite_epoch(
    value, bad_step, caplog
):
    m = nn.Sequential(model(), Poison(bad_step, value))
    sink = Sink()
    state = run(m, 3, sink=sink)
    assert engine_messages(caplog, logging.WARNING) == [
        f"step {bad_step}: the training loss is not finite; the run diverged"
    ]
    assert state.status == "diverged" and state.diverged_at_step == bad_step
    # found at the first check after it (every DIVERGENCE_CHECK_EVERY steps, or an epoch's end)
    check = (bad_step // DIVERGENCE_CHECK_EVERY + 1) * DIVERGENCE_CHECK_EVERY
    assert state.global_step == check
    # the epoch it happened in is not recorded; the one before is kept, as measured
    assert state.epoch == 1 and len(state.history) == 1 and len(sink.logged) == 1
    expected = reference(model(), 1)[0]
    assert close(state.final, {k.replace("/", "_"): v for k, v in expected.items() if k != "epoch"})


def test_a_divergence_after_an_epochs_last_check_is_found_at_its_end():
    batch = 10
    steps = N_TRAIN // batch  # 80 steps an epoch: checks at steps 50, 100, 150, 200, ...
    assert steps % DIVERGENCE_CHECK_EVERY != 0  # so epoch 2 ends (step 160) between two checks
    bad = 2 * steps - 3  # step 157: after epoch 2's last periodic check
    sink = Sink()
    state = run(nn.Sequential(model(), Poison(bad, float("nan"))), 3, batch_size=batch, sink=sink)
    assert (state.status, state.diverged_at_step, state.global_step) == ("diverged", bad, 2 * steps)
    # found before epoch 2 is evaluated or recorded, not at the next periodic check (step 200)
    assert state.epoch == 1 and len(state.history) == 1 and len(sink.logged) == 1


def test_a_divergence_at_step_0_leaves_no_epoch_and_no_final_metrics():
    state = run(nn.Sequential(model(), Poison(0, float("nan"))), 2)
    assert state.status == "diverged" and state.diverged_at_step == 0
    assert state.global_step == DIVERGENCE_CHECK_EVERY and state.final == {}
    assert state.history == [] and state.best_val_acc is None


def stop_after(n: int):
    calls = []

    def should_stop():
        calls.append(None)
        return len(calls) >= n

    return should_stop


@pytest.mark.parametrize(
    "polls, step, step_in_epoch, epoch",
    [(37, 37, 37, 0), (100, 100, 100, 0), (101, 100, 0, 1), (163, 162, 62, 1)],
)  # 100: after epoch 1's last batch, before its evaluation; 101: after its evaluation
def test_a_stop_mid_run_continues_to_the_same_result(polls, step, step_in_epoch, epoch):
    uninterrupted = model()
    whole = run(uninterrupted, 3)
    m, generator = model(), torch.Generator().manual_seed(1)
    opt, stop = sgd(m), stop_after(polls)
    state = train(m, data(), opt, epochs=3, batch_size=BATCH, eval_batch_size=32,
                  generator=generator, should_stop=stop)  # fmt: skip
    assert state.status == "interrupted" and state.global_step == step
    assert (state.step_in_epoch, state.epoch) == (step_in_epoch, epoch)
    if state.step_in_epoch:  # the partial epoch's sums are kept for the rest of it
        assert state.partial_loss_sum > 0
        assert 0 < state.partial_correct <= state.step_in_epoch * BATCH
        # a mid-epoch resume replays the epoch's draws from the state, whatever the generator
        generator = torch.Generator().manual_seed(99)
    state = TrainState.from_state_dict(copy.deepcopy(state.state_dict()))
    done = train(m, data(), opt, epochs=3, batch_size=BATCH, eval_batch_size=32,
                 generator=generator, state=state)  # fmt: skip
    assert done.status == "finished" and done.global_step == whole.global_step
    for got, want in zip(done.history, whole.history, strict=True):
        assert close(got, want)
    for p, q in zip(m.parameters(), uninterrupted.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_a_stop_at_the_last_epochs_end_is_a_finished_run():
    m = model()
    steps = N_TRAIN // BATCH
    # polled after every step and once more after each epoch: 2 x (steps + 1) polls in all
    state = run(m, 2, should_stop=stop_after(2 * (steps + 1)))
    assert state.status == "finished" and state.epoch == 2
    state = run(model(), 2, should_stop=stop_after(steps + 1))
    assert state.status == "interrupted" and state.epoch == 1 and state.step_in_epoch == 0
    assert state.epoch_rng is None  # between epochs: the next one starts from the generator


def test_a_stop_after_a_divergence_reports_the_divergence_not_a_stop():
    state = run(nn.Sequential(model(), Poison(10, float("inf"))), 2, should_stop=stop_after(20))
    assert (state.status, state.diverged_at_step, state.global_step) == ("diverged", 10, 20)


class Observer:
    def __init__(self):
        self.calls = []

    def before_step(self, step):
        self.calls.append(("before", step))

    def after_backward(self, step):
        self.calls.append(("backward", step))

    def after_step(self, step):
        self.calls.append(("after", step))


def test_the_observer_sees_every_step_in_order():
    observer = Observer()
    run(model(), 1, observer=observer)
    steps = N_TRAIN // BATCH
    want = [(what, s) for s in range(steps) for what in ("before", "backward", "after")]
    assert observer.calls == want


def test_the_state_round_trips_through_a_plain_dict():
    state = run(model(), 2, should_stop=stop_after(131))
    again = TrainState.from_state_dict(state.state_dict())
    assert again.state_dict().keys() == state.state_dict().keys()
    assert (again.global_step, again.step_in_epoch, again.epoch) == (130, 30, 1)
    assert again.history == state.history and torch.equal(again.epoch_rng, state.epoch_rng)


def test_bf16_autocast_is_cuda_only_and_channels_last_only_for_images():
    with autocast_context(torch.device("cpu"), "bf16"):
        assert not torch.is_autocast_enabled("cpu")
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    images, vectors = torch.randn(2, 3, 4, 4), torch.randn(2, 5)
    assert to_memory_format(images, True).is_contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous(memory_format=torch.channels_last)
    assert to_memory_format(images, False) is images and to_memory_format(vectors, True) is vectors
    assert torch.equal(to_memory_format(images, True), images)


def test_bf16_on_cuda_is_a_bf16_autocast_and_fp32_is_none(recwarn):
    cuda = torch.device("cuda", 0)
    ctx = autocast_context(cuda, "bf16")  # built only: on a machine without CUDA it warns
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda"
    assert ctx.fast_dtype == torch.bfloat16
    assert not isinstance(autocast_context(cuda, "fp32"), torch.autocast)


# ---- fit's bookkeeping for several members (a pack), on a table of losses ---------------------


class TableTrainable:
    """Members whose per-step losses come from a table (members x steps): fit's bookkeeping
    alone, with no model. Member k's val loss is k and its val accuracy 0.1 (k + 1)."""

    def __init__(self, losses, n_batches=4, batch=2):
        self.losses = torch.tensor(losses, dtype=torch.float32)
        self.alive = list(range(len(losses)))
        self.n_batches, self.batch, self.device = n_batches, batch, torch.device("cpu")
        self.dropped, self.models_seen = [], []

    def __len__(self):
        return len(self.alive)

    def num_batches(self):
        return self.n_batches

    def num_train(self):
        return self.n_batches * self.batch

    def epoch(self, states):
        return range(states[0].step_in_epoch, self.n_batches)

    def step(self, i, step):
        right = torch.full((len(self.alive),), 1, dtype=torch.int64)
        return self.losses[self.alive, step], right, self.batch

    def evaluate(self):
        return [float(k) for k in self.alive], [0.1 * (k + 1) for k in self.alive]

    def train(self, mode=True):
        pass

    def models(self):
        return [nn.Linear(1, 1) for _ in self.alive]

    def drop(self, keep):
        self.dropped.append(list(keep))
        self.alive = [self.alive[k] for k in keep]


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def epoch_metrics(self, trainable, members):
        self.events.append(("metrics", list(members), len(trainable.models())))
        return {"extra/member": [float(m) for m in members]}

    def on_epoch_end(self, members):
        self.events.append(("end", list(members)))

    def on_diverged(self, member):
        self.events.append(("diverged", member))


def test_fit_drops_each_diverged_member_and_records_the_others(caplog):
    inf, nan = float("inf"), float("nan")
    losses = [[1.0] * 8, [1.0, inf, 1, 1, 1, 1, 1, 1], [2.0, 2, 2, 2, 2, nan, 2, 2]]
    table, states, recorder = TableTrainable(losses), [TrainState() for _ in losses], Recorder()
    with caplog.at_level(logging.INFO, logger="initbench.engine"):
        fit(table, states, epochs=2, callbacks=[recorder])
    assert [s.status for s in states] == ["finished", "diverged", "diverged"]
    assert [s.diverged_at_step for s in states] == [None, 1, 5]
    assert table.dropped == [[0, 2], [0]]  # positions among the members left
    assert recorder.events == [
        ("diverged", 1), ("metrics", [0, 2], 2), ("end", [0, 2]),
        ("diverged", 2), ("metrics", [0], 1), ("end", [0]),
    ]  # fmt: skip
    assert [len(s.history) for s in states] == [2, 0, 1]
    first = states[2].history[0]
    assert first["train/loss"] == 2.0 and first["train/acc"] == 0.5
    assert first["val/loss"] == 2.0 and first["val/acc"] == pytest.approx(0.3)
    assert first["extra/member"] == 2.0 and first["epoch"] == 1 and first["step"] == 4
    assert states[0].history[1]["extra/member"] == 0.0 and states[0].global_step == 8
    text = caplog.text
    assert "member 1: step 1: the training loss is not finite; it diverged" in text
    assert "member 2: step 5: the training loss is not finite; it diverged" in text
    assert re.search(r"epoch 1/2: 2 member\(s\), val acc 0\.100 0\.300  \(\d+\.\d\d s\)", text)
    assert re.search(r"epoch 2/2: 1 member\(s\), val acc 0\.100  \(\d+\.\d\d s\)", text)


def test_fit_refuses_states_that_do_not_match_its_members():
    table = TableTrainable([[1.0] * 8, [1.0] * 8])
    with pytest.raises(ValueError, match="1 states for 2 members"):
        fit(table, [TrainState()], epochs=1)
    late = TrainState(epoch=1, global_step=4)
    with pytest.raises(ValueError, match=r"must start at one step \(got "):
        fit(table, [TrainState(), late], epochs=2)
