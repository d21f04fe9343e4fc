"""What only a CUDA device can check: the CUDA paths against the CPU's (telemetry reductions,
channels_last, packs, bf16 autocast) and a SIGTERM stop + resume of a CUDA run.

Every test here is marked ``cuda``: skipped where torch sees no CUDA device, run with
``pytest -m cuda`` by the device check (scripts/device_check.sh). Marked
``cuda(cpu_rehearsal=True)``, they also run on the CPU when INITBENCH_CUDA_TESTS_ON_CPU=1 (the
device check's CPU rehearsal in CI), so their mechanics are tested where no GPU is.
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import torch

from helpers import finish, run_train_cli, start
from initbench.data import DeviceDataset, load_dataset
from initbench.engine import TrainState, fit, train
from initbench.inits import init_module
from initbench.models import build_model
from initbench.packing import Member, PackedModel, PackedTraining
from initbench.telemetry.stats import FIELDS, stack, summarize

pytestmark = pytest.mark.cuda(cpu_rehearsal=True)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 means fp32 here: no TF32 in matrix products or convolutions (restored after)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_layer_statistics_and_histograms_on_the_device_match_the_cpus():
    """The telemetry reductions (telemetry.stats.summarize) of the same tensors on the device
    and on the CPU: the statistics to 1e-9 relative (both accumulate in float64, in another
    order), the histograms equal but for values that lie on a bin edge."""
    g = torch.Generator().manual_seed(1)
    relu_out = torch.relu(torch.randn(128, 64, 8, 8, generator=g))
    relu_out[3, 5] = 0.0  # a dead channel in one example only: alive
    relu_out[:, 7] = 0.0  # dead in every example
    with_nan = torch.randn(64, 300, generator=g) * 3 + 1
    with_nan[0, :5] = float("nan")
    with_nan[1, 0] = float("inf")
    tensors = [
        with_nan,
        torch.rand(64, 300, generator=g),
        torch.randn(40_000, generator=g).exp(),  # skewed, long tail
        torch.full((50,), 0.25),  # constant
        relu_out,
        torch.tanh(3 * torch.randn(256, 100, generator=g)),
    ]
    acts = [None, None, None, None, "relu", "tanh"]
    bins = 64
    cpu = summarize(stack(tensors, acts), len(tensors), bins=bins)
    dev = summarize(stack([t.to(DEVICE) for t in tensors], acts), len(tensors), bins=bins)
    assert dev.device.type == DEVICE.type
    dev = dev.cpu()
    f = len(FIELDS)
    np.testing.assert_allclose(dev[:, :f].numpy(), cpu[:, :f].numpy(), rtol=1e-9, atol=1e-12)
    counts_dev, counts_cpu = dev[:, f:], cpu[:, f:]
    assert torch.equal(counts_dev.sum(1), counts_cpu.sum(1))  # every finite value counted once
    moved = (counts_dev - counts_cpu).abs().sum(1) / 2
    assert moved.max() <= 2, moved  # at most a value or two on an edge changed bins


def _cnn(depth=6, channels=8):
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(3, 32, 32), num_classes=10, depth=depth,
                        channels=channels)  # fmt: skip
    init_module(model, "kaiming_normal", activation=torch.nn.ReLU(),
                generator=torch.Generator().manual_seed(0))  # fmt: skip
    return model


def _images(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DeviceDataset(
        name="images",
        train_x=torch.randn(n, 3, 32, 32, generator=g).to(DEVICE),
        train_y=torch.randint(0, 10, (n,), generator=g).to(DEVICE),
        test_x=torch.randn(64, 3, 32, 32, generator=g).to(DEVICE),
        test_y=torch.randint(0, 10, (64,), generator=g).to(DEVICE),
        input_shape=(3, 32, 32),
        num_classes=10,
    )


def test_channels_last_gives_the_same_forward_and_gradients():
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    outs, grads = [], []
    for channels_last in (False, True):
        model = _cnn().to(DEVICE)
        inp = x
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        out = model(inp)
        out.square().mean().backward()
        outs.append(out.detach().cpu())
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).cpu())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)


def test_bf16_autocast_and_channels_last_train_a_cnn_with_fp32_weights():
    model = _cnn().to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = train(
        model, _images(), optimizer, epochs=3, batch_size=32,
        generator=torch.Generator().manual_seed(0), precision="bf16", channels_last=True,
    )  # fmt: skip
    losses = [row["train/loss"] for row in state.history]
    assert state.status == "finished" and all(np.isfinite(losses))
    assert losses[-1] < losses[0]  # random labels, but 256 examples can be memorised
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _pack(models, data, precision, epochs=2, batch_size=32):
    pack = PackedModel(models, DEVICE)
    members = [Member(TrainState(), torch.Generator().manual_seed(s + 1), data)
               for s in range(len(models))]  # fmt: skip

    def make(params):
        return torch.optim.Adam(params, lr=1e-3)

    training = PackedTraining(pack, members, make(pack.parameters()), make,
                              batch_size=batch_size, precision=precision)  # fmt: skip
    fit(training, [m.state for m in members], epochs=epochs)
    return [m.state for m in members]


def _alone(model, data, precision, seed, epochs=2, batch_size=32):
    model = model.to(DEVICE)
    return train(
        model, data, torch.optim.Adam(model.parameters(), lr=1e-3), epochs=epochs,
        batch_size=batch_size, generator=torch.Generator().manual_seed(seed + 1),
        precision=precision,
    )  # fmt: skip


def _mlp(init, seed, data):
    model = build_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        activation="relu", depth=3, width=64)  # fmt: skip
    init_module(model, init, activation=torch.nn.ReLU(),
                generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return model


def _losses(states):
    return np.array([[row["train/loss"], row["val/loss"]] for s in states for row in s.history])


@pytest.mark.parametrize("precision, rtol", [("fp32", 1e-4), ("bf16", 5e-2)])
def test_a_packed_mlp_follows_its_unpacked_runs(precision, rtol):
    """A pack on the device trains each member as its own run would: to 1e-4 in fp32 (batched
    against single matrix products), to bf16's rounding under autocast."""
    data = load_dataset("gaussian", root="data", device=DEVICE, seed=0, n=640, n_test=128,
                        dim=32)  # fmt: skip
    inits = ["kaiming_normal", "xavier_uniform", "orthogonal"]
    packed = _pack([_mlp(i, s, data) for s, i in enumerate(inits)], data, precision)
    alone = [_alone(_mlp(i, s, data), data, precision, s) for s, i in enumerate(inits)]
    assert all(s.status == "finished" for s in packed)
    np.testing.assert_allclose(_losses(packed), _losses(alone), rtol=rtol)


def test_a_packed_cnn_under_bf16_autocast_follows_its_unpacked_runs():
    data = _images(n=128)
    packed = _pack([_cnn(depth=10, channels=8) for _ in range(2)], data, "bf16")
    alone = [_alone(_cnn(depth=10, channels=8), data, "bf16", s) for s in range(2)]
    assert all(s.status == "finished" for s in packed)
    assert np.isfinite(_losses(packed)).all()
    np.testing.assert_allclose(_losses(packed), _losses(alone), rtol=5e-2)


RESUME = [
    "dataset=circles", "dataset.n_train=2000", "model.width=64", "trainer.batch_size=32",
    "trainer.epochs=30", "trainer.precision=fp32", "logger=tensorboard",
    f"trainer.device={DEVICE.type}",
]  # fmt: skip


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_sigterm_stops_a_run_and_the_same_command_resumes_it_exactly(tmp_path):
    """SIGTERM once the first epoch is recorded (its checkpoint written, training under way):
    the run stops "interrupted" with exit 143, the same command resumes it, and the resumed
    run's per-epoch metrics equal an uninterrupted run's, bit for bit."""
    reference = run_train_cli(*RESUME, f"hydra.run.dir={tmp_path / 'reference'}", timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "stopped"
    proc = start(["src/train.py", *RESUME, f"hydra.run.dir={run_dir}"])
    deadline = time.monotonic() + 300
    while not ((run_dir / "metrics.jsonl").exists() and _rows(run_dir)):
        assert proc.poll() is None, "the run ended before it recorded an epoch"
        assert time.monotonic() < deadline, "no epoch recorded in 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stopped = finish(proc, timeout=120)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert summary["status"] == "interrupted" and summary["global_step"] > 0
    resumed = run_train_cli(*RESUME, f"hydra.run.dir={run_dir}", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert _rows(run_dir) == _rows(tmp_path / "reference")
