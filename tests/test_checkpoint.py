"""checkpoint.py in-process, in milliseconds: which checkpoint loads, what a resume may change,
and the RNG state a checkpoint carries. (Resumes of real runs: tests/test_reliability.py.)"""

import logging
import random

import numpy as np
import pytest
import torch

from initbench.checkpoint import (
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    RESUMABLE_CHANGES,
    config_changes,
    load_checkpoint,
    load_previous_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from initbench.errors import UserError


def state(step: int) -> dict:
    weights = {"w": torch.full((2,), float(step))}
    return {"model": weights, "optimizer": {}, "train_state": {"global_step": step}}


def test_each_save_keeps_the_one_before_and_the_newest_loads(tmp_path):
    assert load_checkpoint(tmp_path) is None and load_previous_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, state(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]
    assert load_previous_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path, state(2))
    save_checkpoint(tmp_path, state(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT, PREVIOUS_CHECKPOINT])
    assert load_checkpoint(tmp_path)["train_state"]["global_step"] == 3
    assert torch.equal(load_checkpoint(tmp_path)["model"]["w"], torch.full((2,), 3.0))
    assert load_previous_checkpoint(tmp_path)["train_state"]["global_step"] == 2


MISSING = "ValueError: missing model/optimizer/train_state entries"


@pytest.mark.parametrize(
    "newest, reason",
    [
        (b"PK\x03\x04 cut short", "RuntimeError: PytorchStreamReader failed reading zip archive"),
        ({"model": {}, "optimizer": {}}, MISSING),
        ({"optimizer": {}, "train_state": {}}, MISSING),
        ({"model": {}, "train_state": {}}, MISSING),
        ([1, 2], MISSING),
    ],
)
def test_an_unusable_newest_falls_back_to_the_previous(tmp_path, caplog, newest, reason):
    save_checkpoint(tmp_path, state(1))
    save_checkpoint(tmp_path, state(2))
    if isinstance(newest, bytes):
        (tmp_path / CHECKPOINT).write_bytes(newest)
    else:
        torch.save(newest, tmp_path / CHECKPOINT)
    with caplog.at_level(logging.WARNING, logger="initbench.checkpoint"):
        assert load_checkpoint(tmp_path)["train_state"]["global_step"] == 1
    cause = reason.split(": ", 1)[1]
    assert f"checkpoint {tmp_path / CHECKPOINT} is unreadable ({cause}" in caplog.text
    assert caplog.text.rstrip().endswith("); trying the previous one")
    # no usable one at all: one error naming both files and what to delete, never a fresh start
    (tmp_path / PREVIOUS_CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert message.startswith(f"no usable checkpoint in {tmp_path} (checkpoint.pt: {reason}")
    assert message.count("checkpoint.prev.pt: ") == 1 and "; checkpoint.prev.pt: " in message
    assert message.endswith("delete checkpoint.pt and checkpoint.prev.pt to start this run over")


class Crafted:
    """Unpickling this would call ``print``: a file holding code, not data."""

    def __reduce__(self):
        return (print, ("ran",))


def test_a_file_holding_objects_is_refused_by_name_and_never_run(tmp_path, caplog, capsys):
    torch.save({"model": Crafted(), "optimizer": {}, "train_state": {}}, tmp_path / CHECKPOINT)
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path)
    assert str(err.value) == (
        f"no usable checkpoint in {tmp_path} (checkpoint.pt: refused: it holds objects other "
        "than tensors and plain data (a file from another program or version, or a crafted "
        "one); nothing in it was run); delete checkpoint.pt to start this run over"
    )
    assert "ran" not in capsys.readouterr().out
    assert caplog.text.rstrip().endswith(
        f"checkpoint {tmp_path / CHECKPOINT} refused: it holds objects other than tensors and "
        "plain data (a file from another program or version, or a crafted one); nothing in it "
        "was run; trying the previous one"
    )
    # a good previous one behind it is the one loaded
    torch.save(state(4), tmp_path / PREVIOUS_CHECKPOINT)
    assert load_checkpoint(tmp_path)["train_state"]["global_step"] == 4
    # the crafted one as the previous, behind a good newest: the newest loads
    (tmp_path / CHECKPOINT).replace(tmp_path / PREVIOUS_CHECKPOINT)
    (tmp_path / PREVIOUS_CHECKPOINT).rename(tmp_path / "crafted.pt")
    save_checkpoint(tmp_path, state(5))
    (tmp_path / "crafted.pt").replace(tmp_path / PREVIOUS_CHECKPOINT)
    assert load_checkpoint(tmp_path)["train_state"]["global_step"] == 5
    (tmp_path / CHECKPOINT).unlink()
    only_previous = r"\(checkpoint.prev.pt: refused: .*delete checkpoint.prev.pt to start"
    with pytest.raises(UserError, match=only_previous):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "previous",
    [b"PK\x03\x04 cut short", {"model": {}, "optimizer": {}}, [1, 2],
     {"model": Crafted(), "train_state": {}}],
)  # fmt: skip
def test_there_is_no_previous_checkpoint_to_roll_back_to_when_it_is_unusable(
    tmp_path, capsys, previous
):
    save_checkpoint(tmp_path, state(2))
    if isinstance(previous, bytes):
        (tmp_path / PREVIOUS_CHECKPOINT).write_bytes(previous)
    else:
        torch.save(previous, tmp_path / PREVIOUS_CHECKPOINT)
    assert load_previous_checkpoint(tmp_path) is None
    assert "ran" not in capsys.readouterr().out  # the crafted one was never unpickled
    torch.save({"train_state": {"global_step": 1}}, tmp_path / PREVIOUS_CHECKPOINT)
    assert load_previous_checkpoint(tmp_path) == {"train_state": {"global_step": 1}}


def draws(generator: torch.Generator) -> tuple:
    return (
        random.random(),
        np.random.rand(3).tolist(),
        np.random.randn(),  # a gaussian draw caches its pair (has_gauss)
        torch.rand(3).tolist(),
        torch.randint(0, 1000, (4,), generator=generator).tolist(),
    )


def test_restored_rng_states_repeat_every_draw(tmp_path):
    cpu, generator = torch.device("cpu"), torch.Generator().manual_seed(7)
    np.random.randn()  # leave a cached gaussian in numpy's state
    saved = rng_state(cpu, generator)
    assert saved["cuda_rng"] is None
    first = draws(generator)
    save_checkpoint(tmp_path, {"model": {}, "optimizer": {}, "train_state": {}, **saved})
    draws(generator)  # move every generator on
    restore_rng(load_checkpoint(tmp_path), cpu, generator)
    assert draws(generator) == first


def test_cuda_rng_states_are_saved_and_restored_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["cuda state"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", calls.append)
    generator = torch.Generator()
    assert rng_state(torch.device("cpu"), generator)["cuda_rng"] is None
    saved = rng_state(torch.device("cuda", 0), generator)
    assert saved["cuda_rng"] == ["cuda state"]
    restore_rng(saved, torch.device("cpu"), generator)  # a CUDA run resumed on a CPU
    assert calls == []
    restore_rng({**saved, "cuda_rng": None}, torch.device("cuda"), generator)  # CPU run on CUDA
    assert calls == []
    restore_rng(saved, torch.device("cuda"), generator)
    assert calls == [["cuda state"]]


# --------------------------------------------------------------------- what a resume may change

OLD = {
    "seed": 0,
    "init": {"name": "kaiming_normal", "mode": "fan_in"},
    "optimizer": {"_target_": "torch.optim.SGD", "lr": 0.01},
    "trainer": {"epochs": 5, "device": "cpu", "batch_size": 128, "num_threads": None,
                "memory_limit_gb": None},
    "telemetry": {"every_n_steps": 100, "bins": 64},
    "diagnose": {"at_start": True},
    "logger": {"wandb": {"project": "a"}},
    "data_dir": "data",
    "resume": True,
}  # fmt: skip


def changed(path: str, value) -> dict:
    new = {k: dict(v) if isinstance(v, dict) else v for k, v in OLD.items()}
    node, *rest = path.split(".")
    if rest:
        new[node] = {**new[node], rest[0]: value}
    else:
        new[node] = value
    return new


@pytest.mark.parametrize(
    "path, value",
    [("trainer.epochs", 10), ("trainer.device", "cuda"), ("trainer.num_threads", 2),
     ("trainer.memory_limit_gb", 8), ("data_dir", "/elsewhere"), ("resume", False),
     ("logger", {}), ("logger", {"tensorboard": {}}), ("telemetry", {"every_n_steps": 5}),
     ("diagnose", {"at_start": False})],
)  # fmt: skip
def test_where_how_long_and_what_is_observed_may_change(path, value):
    assert config_changes(OLD, changed(path, value)) == []


@pytest.mark.parametrize(
    "path, value, line",
    [("seed", 1, "seed: 0 -> 1"),
     ("init.name", "xavier_uniform", "init.name: 'kaiming_normal' -> 'xavier_uniform'"),
     ("init.mode", "fan_out", "init.mode: 'fan_in' -> 'fan_out'"),
     ("optimizer.lr", 0.1, "optimizer.lr: 0.01 -> 0.1"),
     ("optimizer._target_", "torch.optim.Adam",
      "optimizer._target_: 'torch.optim.SGD' -> 'torch.optim.Adam'"),
     ("trainer.batch_size", 64, "trainer.batch_size: 128 -> 64")],
)  # fmt: skip
def test_what_changes_the_results_is_refused_and_named(path, value, line):
    assert config_changes(OLD, changed(path, value)) == [line]


def test_added_and_removed_keys_are_changes_listed_in_key_order():
    new = changed("seed", 3)
    new["init"] = {"name": "kaiming_normal", "gain": 2.0}  # mode removed, gain added
    assert config_changes(OLD, new) == [
        "init.gain: None -> 2.0",
        "init.mode: 'fan_in' -> None",
        "seed: 0 -> 3",
    ]
    assert config_changes(new, OLD) == [
        "init.gain: 2.0 -> None",
        "init.mode: None -> 'fan_in'",
        "seed: 3 -> 0",
    ]


def test_allowed_keys_and_whole_nodes_are_the_callers_choice():
    new = changed("seed", 1)
    new["init"] = {"name": "xavier_uniform"}
    assert config_changes(OLD, new, allowed=("seed", "init")) == []
    assert config_changes(OLD, new, allowed=("init.name",)) == [
        "init.mode: 'fan_in' -> None",
        "seed: 0 -> 1",
    ]
    longer = changed("trainer.epochs", 9)
    assert config_changes(OLD, longer, allowed=()) == ["trainer.epochs: 5 -> 9"]
    assert config_changes(OLD, longer, allowed=("trainer",)) == []
    # a node that becomes a value is one change at the node's name
    assert config_changes(OLD, changed("init", "he"), allowed=()) == [
        "init: None -> 'he'",
        "init.mode: 'fan_in' -> None",
        "init.name: 'kaiming_normal' -> None",
    ]
    assert "seed" not in RESUMABLE_CHANGES and "init" not in RESUMABLE_CHANGES


def test_a_run_saved_before_the_holdout_existed_resumes_as_holdout_0():
    """OLD has no trainer.holdout (saved before the field existed): 0 is what it did."""
    assert "holdout" not in OLD["trainer"]
    assert config_changes(OLD, changed("trainer.holdout", 0)) == []
    assert config_changes(OLD, changed("trainer.holdout", 500)) == ["trainer.holdout: 0 -> 500"]
