"""Progress: lines at an interval when not on a terminal, a tqdm bar on one; the training loop
and the local sweep report through it."""

from __future__ import annotations

import io
import logging

import torch
from torch import nn

from initbench.data import DeviceDataset
from initbench.engine import train
from initbench.progress import Progress, default_interval, hms


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_come_every_interval_with_count_rate_and_eta():
    clock, lines = FakeClock(), []
    p = Progress(100, "epoch 1/3", interval=10, write=lines.append, stream=io.StringIO(),
                 clock=clock)  # fmt: skip
    for _ in range(20):  # 20 steps in 4 s: no line yet
        clock.t += 0.2
        p.update()
    assert lines == []
    for _ in range(40):  # 40 more in 8 s: 12 s in all, one line
        clock.t += 0.2
        p.update()
    assert len(lines) == 1
    assert lines[0].startswith("epoch 1/3: ")
    assert "/100 steps" in lines[0] and "5 steps/s" in lines[0]
    n = int(lines[0].split(": ")[1].split("/")[0])
    assert f"ETA {hms((100 - n) / 5)}" in lines[0]
    p.set_postfix(failed=2)
    for _ in range(40):
        clock.t += 0.2
        p.update()
    assert len(lines) == 2 and lines[1].endswith("failed 2")
    p.close()


def test_a_short_loop_prints_nothing():
    lines = []
    with Progress(1000, "epoch", interval=10, write=lines.append, stream=io.StringIO()) as p:
        for _ in p.wrap(range(1000)):
            pass
    assert lines == [] and p.n == 1000 and p.closed


def test_rate_counts_only_what_this_process_did():
    clock, lines = FakeClock(), []
    p = Progress(10, "sweep", "run", initial=6, interval=0, write=lines.append, clock=clock,
                 stream=io.StringIO())  # fmt: skip
    assert p.eta() is None
    clock.t += 50
    p.update()  # 1 run in 50 s; 3 left
    assert lines == ["sweep: 7/10 runs (70%), 50 s/run, ETA 0:02:30"]


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("INITBENCH_PROGRESS_S", "0.5")
    assert default_interval() == 0.5
    monkeypatch.setenv("INITBENCH_PROGRESS_S", "soon")
    assert default_interval() == 10.0
    monkeypatch.delenv("INITBENCH_PROGRESS_S")
    assert default_interval() == 10.0


def test_a_terminal_gets_a_tqdm_bar_with_rate_and_eta():
    stream = FakeTTY()
    p = Progress(50, "epoch 1/1", stream=stream, min_duration=0)
    assert p.bar is not None
    for _ in p.wrap(range(50)):
        pass
    out = stream.getvalue()
    # tqdm's bar: count/total, [elapsed<remaining (the ETA), rate]; removed when closed
    assert "epoch 1/1:" in out and "/50 [00:00<" in out and "step/s]" in out
    assert out.endswith("\r") and p.closed


def test_a_log_line_during_a_bar_goes_above_it_not_onto_it(monkeypatch):
    """A warning while the bar is drawn (Ctrl-C's "stopping after this step") is written on a
    line of its own: tqdm clears the bar, writes the line, and draws the bar again below."""
    stream = FakeTTY()
    monkeypatch.setattr("sys.stderr", stream)  # a console handler on the terminal's stream
    handler = logging.StreamHandler(stream)
    logging.root.addHandler(handler)
    try:
        with Progress(50, "epoch 1/1", stream=stream, min_duration=0) as p:
            p.update(10)
            logging.getLogger("initbench.signals").warning("SIGINT received: stopping")
            p.update(10)
        assert handler in logging.root.handlers  # restored when the bar closes
    finally:
        logging.root.removeHandler(handler)
    out = stream.getvalue()
    line = next(part for part in out.split("\r") if "SIGINT received" in part)
    assert line.lstrip(" ").startswith("SIGINT received: stopping\n")  # after the bar's erasure
    assert "10/50" in out  # the bar drawn again below the line


def tiny_data() -> DeviceDataset:
    """40 training examples: 3 steps an epoch in batches of 16."""
    g = torch.Generator().manual_seed(0)
    return DeviceDataset(
        name="tiny",
        train_x=torch.randn(40, 4, generator=g),
        train_y=torch.randint(0, 2, (40,), generator=g),
        test_x=torch.randn(8, 4, generator=g),
        test_y=torch.randint(0, 2, (8,), generator=g),
        input_shape=(4,),
        num_classes=2,
    )


def test_the_training_loop_reports_progress_when_not_on_a_terminal(monkeypatch, caplog):
    monkeypatch.setenv("INITBENCH_PROGRESS_S", "0")  # a line on every step
    data, model = tiny_data(), nn.Sequential(nn.Linear(4, 2))
    with caplog.at_level(logging.INFO, logger="initbench.engine"):
        state = train(model, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
                      batch_size=16, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert state.status == "finished"
    lines = [r.getMessage() for r in caplog.records if "steps" in r.getMessage()]
    assert lines[0].startswith("epoch 1/2: 1/3 steps (33%)")
    assert lines[-1].startswith("epoch 2/2: 3/3 steps (100%)") and "ETA 0:00:00" in lines[-1]
    assert len(lines) == 6


def test_the_training_loop_is_silent_for_short_epochs(caplog):
    data, model = tiny_data(), nn.Sequential(nn.Linear(4, 2))
    with caplog.at_level(logging.INFO, logger="initbench.engine"):
        train(model, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
              batch_size=16, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert not [r for r in caplog.records if "steps" in r.getMessage()]
