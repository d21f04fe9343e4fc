"""Telemetry: on-device statistics and histograms, snapshots during training, both sinks."""

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from helpers import compose_dict
from initbench.build import validate
from initbench.data import DeviceDataset
from initbench.engine import train
from initbench.errors import UserError
from initbench.models import build_model
from initbench.telemetry import (
    FIELDS,
    MultiSink,
    Telemetry,
    TensorBoardSink,
    WandbSink,
    build_telemetry,
    find_probes,
    stack,
    summarize,
)
from initbench.telemetry.stats import COL, MAX_BINS, _bin_counts, _histc_counts, row_norms
from initbench.telemetry.weights import (
    SAMPLE_SIZE,
    WEIGHTS_FILE,
    WeightSample,
    read_weight_samples,
    sample_indices,
    sample_weights,
    write_weight_samples,
)

BATCH = 16
KEEP_ALL = {"histograms": 0, "scalars": 0, "images": 0, "tensors": 0}


def toy_data(n=4 * BATCH, dim=6, classes=3, seed=0) -> DeviceDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return DeviceDataset("toy", x, y, x[:BATCH], y[:BATCH], (dim,), classes)


def toy_model(activation="relu", widths=(8, 8), seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=(6,), num_classes=3, activation=activation,
                       widths=list(widths))  # fmt: skip


def fit(model, data, observer, epochs=1, sink=None):
    return train(model, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=epochs,
                 batch_size=BATCH, generator=torch.Generator().manual_seed(0), sink=sink,
                 observer=observer)  # fmt: skip


def events(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance=KEEP_ALL)
    acc.Reload()
    return acc


class Recorder:
    """A sink that keeps what it is given."""

    wandb_run_id = None

    def __init__(self):
        self.scalars, self.histograms = {}, {}

    def log_scalars(self, scalars, step):
        self.scalars.setdefault(step, {}).update(scalars)

    def log_histograms(self, histograms, step):
        self.histograms.setdefault(step, {}).update(histograms)


# ----------------------------------------------------------------------------- statistics


def test_summarize_matches_numpy_and_leaves_out_nonfinite_values():
    g = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(40, 30, generator=g) * 3 + 1,
        torch.randn(40, 30, generator=g),  # same shape: reduced together with the first
        torch.full((7,), 0.1),  # constant
        torch.tensor([1.0, float("nan"), float("inf"), -2.0, 3.0, float("-inf")]),
        torch.full((3,), float("nan")),  # nothing finite
        torch.tensor([3e38, -3e38, 1e38, 0.0]),  # near the float32 limit: no overflow
        torch.randn(5, 4, generator=g, dtype=torch.float64) * 1e-200,  # float64 stays float64
    ]
    bins = 16
    out = summarize(stack(tensors), len(tensors), bins).cpu().numpy()
    assert out.shape == (len(tensors), len(FIELDS) + bins)
    for t, row in zip(tensors, out, strict=True):
        values = t.double().flatten().numpy()
        finite = values[np.isfinite(values)]
        counts = row[len(FIELDS) :]
        assert row[COL["count"]] == finite.size
        assert row[COL["nonfinite"]] == values.size - finite.size
        assert counts.sum() == finite.size  # non-finite values are not in the histogram
        assert np.isfinite(row[COL["lo"]]) and row[COL["lo"]] < row[COL["hi"]]
        if finite.size == 0:
            assert np.isnan(row[COL["mean"]]) and np.isnan(row[COL["std"]])
            continue
        assert row[COL["mean"]] == pytest.approx(finite.mean(), rel=1e-5, abs=1e-6 * finite.std())
        assert row[COL["std"]] == pytest.approx(finite.std(), rel=1e-5, abs=1e-12)
        assert row[COL["rms"]] == pytest.approx(np.sqrt((finite**2).mean()), rel=1e-5)
        if finite.min() < finite.max():  # the range is exactly the finite values' range
            assert row[COL["lo"]] == finite.min() and row[COL["hi"]] == finite.max()
        else:  # a constant gets c +- |c|/2: it sits on the middle edge, counted either side
            assert row[COL["lo"]] < finite.min() < row[COL["hi"]]
            assert max(counts[bins // 2 - 1], counts[bins // 2]) == finite.size
            continue
        reference, _ = np.histogram(finite, bins=bins, range=(row[COL["lo"]], row[COL["hi"]]))
        assert np.abs(counts - reference).sum() <= 2  # at most a value on a bin edge moves
    assert out[2, COL["std"]] == 0 and out[2, COL["mean"]] == pytest.approx(0.1)
    c = float(tensors[2][0])  # a constant c spans exactly c +- |c|/2
    assert (out[2, COL["lo"]], out[2, COL["hi"]]) == (c - c / 2, c + c / 2)
    zeros = summarize(stack([torch.zeros(5)]), 1)[0]  # ... and 0 spans +-0.5
    assert (float(zeros[COL["lo"]]), float(zeros[COL["hi"]])) == (-0.5, 0.5)


def test_rows_with_nonfinite_values_in_one_group_keep_their_own_statistics_and_bins():
    nan = float("nan")
    # One group (same shape): the zeros standing in for NaN put 0 at the range's lower edge, at
    # its upper edge, and inside it; a row with one finite value; every row's mean differs.
    tensors = [
        torch.tensor([1.0, 2.0, 3.0, nan]),  # range [0, 3]: 0 falls in the first bin
        torch.tensor([-3.0, -2.0, -1.0, nan]),  # range [-3, 0]: 0 falls in the last bin
        torch.tensor([5.0, nan, nan, nan]),  # one finite value: its mean, std 0
        torch.tensor([-1.0, nan, 2.0, 3.0]),
    ]
    out = summarize(stack(tensors), len(tensors), bins=4).numpy()
    for t, row in zip(tensors, out, strict=True):
        finite = t[t.isfinite()].double().numpy()
        assert (row[COL["count"]], row[COL["nonfinite"]]) == (finite.size, 4 - finite.size)
        # the std's absolute error: rounding of the sums, ~1e-8 of the largest magnitude (5)
        assert row[COL["mean"]] == pytest.approx(finite.mean(), rel=1e-7)
        assert row[COL["std"]] == pytest.approx(finite.std(), rel=1e-7, abs=1e-7 * 5)
    hist = out[:, len(FIELDS) :]
    assert hist[0].tolist() == [0, 1, 1, 1]  # 1 -> 1.33, 2 -> 2.67, 3 -> the last bin
    assert hist[1].tolist() == [1, 1, 1, 0]
    assert hist[2].tolist() == [0, 0, 0, 1]
    assert hist[3].tolist() == [1, 0, 0, 2]  # range [-1, 3], unit bins: -1; 2 and 3 in [2, 3]


def test_summarize_bins_default_to_none_and_are_bounded_and_empty_input_is_all_nan():
    t = torch.randn(3, 5)
    assert summarize(stack([t]), 1).shape == (1, len(FIELDS))  # no histogram unless asked
    assert summarize(stack([t]), 1, bins=MAX_BINS)[0, len(FIELDS) :].sum() == 15
    for bins in (-1, MAX_BINS + 1):
        with pytest.raises(ValueError, match=rf"bins must be in \[0, 512\] \(got {bins}\)"):
            summarize(stack([t]), 1, bins=bins)
    empty = summarize([], 3, bins=4)  # no tensor observed: every row stays NaN, on the CPU
    assert (
        empty.shape == (3, len(FIELDS) + 4) and empty.isnan().all() and empty.device.type == "cpu"
    )
    norms = row_norms([], 2)
    assert norms.shape == (2,) and norms.isnan().all() and norms.dtype == torch.float64


def test_each_stacked_tensor_gets_its_own_norm():
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(7)]
    norms = row_norms(stack(tensors), 3)
    assert norms.tolist() == pytest.approx([float(t.double().norm()) for t in tensors], rel=1e-7)


def test_stack_reduces_low_precision_tensors_in_float32_and_keeps_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    tensors = [x.bfloat16(), x.half(), x, x.double()]
    groups = stack(tensors)
    assert [group.data.dtype for group in groups] == [torch.float32] * 3 + [torch.float64]
    out = summarize(groups, 4)
    for row, t in zip(out, tensors, strict=True):  # each as exact as its values allow
        ref = t.double()
        assert float(row[COL["std"]]) == pytest.approx(float(ref.std(unbiased=False)), rel=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_the_cuda_bin_counting_counts_as_the_cpus(device):
    # _bin_counts uses histc on CUDA (bincount would read its input's max back to the host);
    # both count floor(position) for positions in [0, n), including each row's clamped end.
    g = torch.Generator().manual_seed(0)
    n = 3 * 64
    positions = torch.rand(50_000, generator=g) * n
    positions = torch.cat([positions, torch.arange(n).float(), torch.arange(1, 4) * 64 - 0.5])
    cpu = _bin_counts(positions, n)
    assert cpu.sum() == len(positions) and cpu.dtype == torch.int64
    on_device = positions.to(device)
    assert torch.equal(_histc_counts(on_device, n).long().cpu(), cpu)
    assert torch.equal(_bin_counts(on_device, n).long().cpu(), cpu)  # histc there, bincount here


def rel(value, expected) -> float:
    return abs(float(value) - float(expected)) / abs(float(expected))


def test_statistics_of_a_large_offset_tensor_match_a_float64_reference():
    # 8.4M elements (a CNN activation) far from zero: float32 sums get the std wrong by ~2e-4
    # and the norm by ~3e-3 relative; float64 sums of exactly scaled values by ~1e-14.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8_388_608, generator=g).mul_(0.5).add_(1000.0)
    ref = x.double()
    mean, std = ref.mean(), ref.std(unbiased=False)
    stats = summarize(stack([x]), 1)[0]
    norm = row_norms(stack([x]), 1)[0]
    assert rel(stats[COL["mean"]], mean) < 1e-12
    assert rel(stats[COL["std"]], std) < 1e-12
    assert rel(stats[COL["rms"]], (mean**2 + std**2).sqrt()) < 1e-12
    assert rel(norm, ref.norm()) < 1e-12


@pytest.mark.parametrize("spread", [1e-3, 1e-5, 1e-6])
def test_a_small_spread_far_from_zero_keeps_its_digits(spread):
    # std / |mean| down to 1e-6, where float32 keeps ~16 distinct values per std: the exact
    # statistics of those float32 values, two rows of one group, each far from the other.
    # (Dividing by the largest magnitude instead of a power of two rounds every element: the
    # std was then off by 3e-6 at 1e-5 and 7e-4 at 1e-6.)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(100_000, generator=g).mul_(1000 * spread).add_(1000.0)
    b = torch.randn(100_000, generator=g).mul_(3000 * spread).sub_(3000.0)
    out = summarize(stack([a, b]), 2)
    for t, row in zip((a, b), out, strict=True):
        ref = t.double()
        assert rel(row[COL["mean"]], ref.mean()) < 1e-12
        assert rel(row[COL["std"]], ref.std(unbiased=False)) < 1e-9


def test_subnormal_values_are_scaled_without_overflow():
    # float32 below 1.2e-38 (e.g. an init with std 1e-40): the power of two that would bring
    # them to 1 overflows float32, so they are scaled by 2**126 and stay exact
    x = torch.tensor([1e-40, -3e-41, 2e-42, 7e-45, 0.0])
    assert x.abs().max() < torch.finfo(torch.float32).tiny and (x != 0).sum() == 4
    row = summarize(stack([x]), 1, bins=4)[0]
    ref = x.double()
    assert rel(row[COL["mean"]], ref.mean()) < 1e-12
    assert rel(row[COL["std"]], ref.std(unbiased=False)) < 1e-12
    assert (float(row[COL["lo"]]), float(row[COL["hi"]])) == (float(ref.min()), float(ref.max()))
    assert row[len(FIELDS) :].sum() == 5


def test_dead_and_saturated_fractions():
    relu_out = torch.zeros(BATCH, 4)
    relu_out[3, 0] = 1.0  # unit 0 fires once: alive; units 1-3 never fire: dead
    conv_out = torch.zeros(BATCH, 2, 3, 3)
    conv_out[0, 1, 2, 2] = 0.5  # channel 1 alive at one position of one example
    tanh_out = torch.tensor([[0.995, -0.999, 0.5, 0.0]])
    sigmoid_out = torch.tensor([[0.999, 0.001, 0.5, 0.9]])
    out = summarize(
        stack(
            [relu_out, conv_out, tanh_out, sigmoid_out], ["relu", "leaky_relu", "tanh", "sigmoid"]
        ),
        4,
    ).numpy()
    assert out[0, COL["dead_frac"]] == pytest.approx(0.75)
    assert out[1, COL["dead_frac"]] == pytest.approx(0.5)
    assert out[2, COL["saturated_frac"]] == pytest.approx(0.5)
    assert out[3, COL["saturated_frac"]] == pytest.approx(0.5)
    assert np.isnan(out[0, COL["saturated_frac"]]) and np.isnan(out[2, COL["dead_frac"]])


def test_unit_fractions_are_per_unit_and_exact():
    relu_out = torch.ones(6, 3)  # 6 examples, 3 units: unit 0 never fires
    relu_out[:, 0] = -1.0
    sigmoid_out = torch.tensor([[0.003, 0.5, 0.6, 0.997, 0.2, 0.4]])  # 2 of 6 within 0.005
    out = summarize(stack([relu_out, sigmoid_out], ["relu", "sigmoid"]), 2).numpy()
    assert out[0, COL["dead_frac"]] == 1 / 3 and out[1, COL["saturated_frac"]] == 1 / 3


def test_probes_pair_layers_with_their_activations():
    mlp = toy_model("tanh")
    assert [(p.name, p.activation) for p in find_probes(mlp)] == [
        ("fc1", "tanh"), ("fc2", "tanh"), ("head", None)]  # fmt: skip
    cnn = build_model("cnn", input_shape=(3, 8, 8), num_classes=10, depth=3, channels=2)
    probes = find_probes(cnn)
    assert [p.name for p in probes] == ["conv1", "conv2", "conv3", "head"]
    assert probes[0].output is cnn.act1 and probes[0].kind == "conv2d"
    assert probes[-1].output is cnn.head


def test_a_bare_layer_is_its_own_probe_and_a_model_without_layers_is_refused():
    (probe,) = find_probes(torch.nn.Linear(3, 2))  # no module name: named after its type
    assert (probe.name, probe.kind, probe.activation) == ("linear", "linear", None)
    with pytest.raises(ValueError, match="^Sequential has no Linear or Conv layers to observe$"):
        find_probes(torch.nn.Sequential(torch.nn.ReLU()))


# ----------------------------------------------------------------------------- during training


def test_tensorboard_gets_one_histogram_per_layer_per_snapshot(tmp_path):
    data, model = toy_data(), toy_model()
    sink = TensorBoardSink(tmp_path / "tb")
    telemetry = Telemetry(model, sink, every_n_steps=2, bins=32)
    fit(model, data, telemetry, sink=sink)  # 4 steps: snapshots at 0 and 2
    sink.finish()
    acc = events(tmp_path / "tb")
    sizes = {"fc1": (8 * 6, BATCH * 8), "fc2": (8 * 8, BATCH * 8), "head": (3 * 8, BATCH * 3)}
    expected = {f"{kind}/{layer}" for kind in ("weights", "acts", "grads") for layer in sizes}
    assert set(acc.Tags()["histograms"]) == expected
    for layer, (n_weights, n_acts) in sizes.items():
        for kind, n in (("weights", n_weights), ("acts", n_acts), ("grads", n_weights)):
            hists = acc.Histograms(f"{kind}/{layer}")
            assert [h.step for h in hists] == [0, 2]
            for h in hists:
                assert h.histogram_value.num == n
                assert len(h.histogram_value.bucket) == 32
                assert sum(h.histogram_value.bucket) == n
    scalars = set(acc.Tags()["scalars"])
    for layer in sizes:
        for stat in ("weight_std", "act_rms", "grad_mean", "grad_norm", "update_ratio"):
            assert f"stats/{stat}/{layer}" in scalars
    assert {"stats/dead_frac/fc1", "stats/dead_frac/fc2"} <= scalars
    assert "stats/dead_frac/head" not in scalars and "stats/saturated_frac/fc1" not in scalars
    ratio = acc.Scalars("stats/update_ratio/fc1")[0].value
    assert 0 < ratio < 1  # one SGD step moves the weights a little
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed after each snapshot


def test_statistics_match_the_model_at_the_snapshot():
    data, model = toy_data(), toy_model("tanh")
    recorder = Recorder()
    w0 = model.fc1.weight.detach().clone()
    fit(model, data, Telemetry(model, recorder, every_n_steps=100))  # SGD, lr 0.1
    stats = recorder.scalars[0]
    assert stats["stats/weight_std/fc1"] == pytest.approx(w0.std(correction=0).item(), rel=1e-5)
    assert stats["stats/weight_rms/fc1"] == pytest.approx(w0.pow(2).mean().sqrt().item(), rel=1e-5)
    # plain SGD: the step-0 update is -0.1 * grad, so ||dW|| / ||W|| = 0.1 * ||grad|| / ||W||
    expected = 0.1 * stats["stats/grad_norm/fc1"] / w0.norm().item()
    assert stats["stats/update_ratio/fc1"] == pytest.approx(expected, rel=1e-4)
    assert stats["stats/grad_norm/fc1"] > 0
    assert "stats/saturated_frac/fc1" in stats and "stats/dead_frac/fc1" not in stats
    edges, counts = recorder.histograms[0]["weights/fc1"]
    assert len(edges) == len(counts) + 1 == 65 and counts.sum() == w0.numel()
    assert (edges[0], edges[-1]) == pytest.approx((w0.min().item(), w0.max().item()))


@pytest.mark.parametrize(
    "params, steps_per_epoch, expected",
    [
        ({"every_n_steps": 3}, 4, [0, 3, 6, 9]),
        ({"every_n_steps": 100}, 4, [0]),
        ({"every_n_steps": None, "every_n_epochs": 2}, 4, [0, 8]),
        ({"every_n_steps": 1, "histograms": False}, 4, list(range(12))),
    ],
)
def test_snapshot_interval_is_honoured(params, steps_per_epoch, expected):
    data, model = toy_data(n=steps_per_epoch * BATCH), toy_model()
    recorder = Recorder()
    node = {**compose_dict()["telemetry"], **params}  # the config's node, as a run passes it
    telemetry = build_telemetry(node, model, recorder, steps_per_epoch=steps_per_epoch)
    fit(model, data, telemetry, epochs=3)  # 12 steps
    assert telemetry.snapshots == expected
    assert sorted(recorder.scalars) == expected
    assert sorted(recorder.histograms) == ([] if params.get("histograms") is False else expected)


def test_disabled_telemetry_builds_no_observer():
    node = {**compose_dict()["telemetry"], "enabled": False}
    assert build_telemetry(node, toy_model(), Recorder(), steps_per_epoch=1) is None


def test_nonfinite_activations_are_counted_and_do_not_crash_a_writer(tmp_path):
    data, model = toy_data(), toy_model()
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")  # unit 0 of fc2 (and everything after) is NaN
        model.fc2.weight[1, 0] = float("inf")
    sink = TensorBoardSink(tmp_path / "tb")
    recorder = Recorder()
    fit(model, data, Telemetry(model, MultiSink([sink, recorder]), every_n_steps=100), sink=sink)
    sink.finish()
    stats = recorder.scalars[0]
    assert stats["stats/act_nonfinite/fc1"] == 0
    assert stats["stats/act_nonfinite/fc2"] >= BATCH  # at least unit 0 over the whole batch
    assert stats["stats/weight_nonfinite/fc2"] == 2
    assert stats["stats/act_nonfinite/head"] > 0
    acc = events(tmp_path / "tb")
    fc2 = acc.Histograms("acts/fc2")[0].histogram_value
    assert fc2.num == BATCH * 8 - stats["stats/act_nonfinite/fc2"]  # the finite ones only
    assert acc.Histograms("weights/fc2")[0].histogram_value.num == 8 * 8 - 2


def test_wandb_sink_gets_the_same_tags_as_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    data, model = toy_data(), toy_model()
    tb = TensorBoardSink(tmp_path / "tb")
    wb = WandbSink(run_dir=tmp_path, project="initbench-test", name="telemetry", config={})
    logged = {}
    real_log = wb.run.log

    def log(data, *args, **kwargs):
        logged.update(data)
        return real_log(data, *args, **kwargs)

    monkeypatch.setattr(wb.run, "log", log)
    sink = MultiSink([tb, wb])
    fit(model, data, Telemetry(model, sink, every_n_steps=100, bins=16))
    import wandb

    hists = {k: v for k, v in logged.items() if isinstance(v, wandb.Histogram)}
    scalars = {k for k, v in logged.items() if k.startswith("stats/")}
    assert len(hists["weights/fc1"].histogram) == 16
    assert sum(hists["acts/fc2"].histogram) == BATCH * 8
    sink.finish()
    acc = events(tmp_path / "tb")
    assert set(hists) == set(acc.Tags()["histograms"])
    assert scalars == {t for t in acc.Tags()["scalars"] if t.startswith("stats/")}
    assert list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))


# ----------------------------------------------------------------------------- config and bench


@pytest.mark.parametrize(
    "override, field",
    [
        ("telemetry.bins=0", "telemetry.bins"),
        ("telemetry.bins=513", "telemetry.bins"),
        ("telemetry.every_n_steps=0", "telemetry.every_n_steps"),
        ("telemetry.every_n_epochs=-1", "telemetry.every_n_epochs"),
        ("telemetry.histograms=maybe", "telemetry.histograms"),
    ],
)
def test_bad_telemetry_values_name_the_field(override, field):
    with pytest.raises(UserError, match=field):
        validate(compose_dict([override, "trainer.device=cpu"]))


# ----------------------------------------------------------------------------- weight samples


def test_sample_indices_are_fixed_distinct_and_depend_on_the_layer():
    assert sample_indices("fc1", SAMPLE_SIZE) is None  # small layers: every value
    idx = sample_indices("conv3", 36_864)
    assert idx.shape == (SAMPLE_SIZE,) and np.array_equal(idx, np.unique(idx))
    assert 0 <= idx[0] and idx[-1] < 36_864
    assert np.array_equal(idx, sample_indices("conv3", 36_864))  # the same at init and end
    assert not np.array_equal(idx, sample_indices("conv4", 36_864))
    assert not np.array_equal(idx, sample_indices("conv3", 36_865))


def test_weight_samples_are_the_layer_weights_at_the_sampled_indices():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.Flatten(), nn.Linear(32, 10))
    samples = sample_weights(model)
    assert list(samples) == ["0", "3"]  # no norm layers, no biases; names without ".weight"
    conv = model[0].weight.detach().flatten().numpy()
    assert samples["0"].numel == conv.size == 4608
    assert samples["0"].values.dtype == np.float32
    assert np.array_equal(samples["0"].values, conv[sample_indices("0", conv.size)])
    assert np.array_equal(samples["3"].values, model[3].weight.detach().flatten().numpy())
    # channels_last stores a conv weight in another order; the sample follows logical order
    again = sample_weights(model.to(memory_format=torch.channels_last))
    assert np.array_equal(again["0"].values, samples["0"].values)


def test_weights_file_keeps_init_and_final_and_a_fresh_start_drops_stale_samples(tmp_path):
    def fake(value, numel=3):
        return {"fc1": WeightSample(np.full(3, value, np.float32), numel)}

    write_weight_samples(tmp_path, "init", fake(1.0, numel=3))
    write_weight_samples(tmp_path, "final", fake(2.0))
    write_weight_samples(tmp_path, "final", fake(3.0))  # a run extended: its new end
    got = read_weight_samples(tmp_path)
    assert got["init"]["fc1"].values.tolist() == [1.0] * 3 and got["init"]["fc1"].numel == 3
    assert got["final"]["fc1"].values.tolist() == [3.0] * 3
    assert [p.name for p in tmp_path.iterdir()] == [WEIGHTS_FILE]  # no temp file left
    with np.load(tmp_path / WEIGHTS_FILE, allow_pickle=False) as npz:  # plain arrays only
        assert sorted(npz.files) == ["final/fc1", "init/fc1", "numel/fc1"]
    write_weight_samples(tmp_path, "init", fake(4.0))
    assert set(read_weight_samples(tmp_path)) == {"init"}
    with pytest.raises(ValueError, match="stage"):
        write_weight_samples(tmp_path, "middle", fake(5.0))


def test_a_corrupt_weights_file_is_reported_and_never_fails_a_run(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"PK not really a zip")
    with pytest.raises(ValueError, match="weights.npz unreadable"):
        read_weight_samples(tmp_path)
    write_weight_samples(tmp_path, "final", {"fc1": WeightSample(np.zeros(2, np.float32), 2)})
    assert set(read_weight_samples(tmp_path)) == {"final"}
    with pytest.raises(FileNotFoundError):
        read_weight_samples(tmp_path / "nowhere")
