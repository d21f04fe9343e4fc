"""The step-0 signal-propagation report: hand-computable cases, the CLI, and training runs."""

import json
import math
from collections import OrderedDict

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from helpers import CPU_OVERRIDES, compose_dict, run_cli
from initbench.build import prepare, validate
from initbench.diagnose import LAYER_KEYS, MEASURED, aggregate, measure, report_for, run_diagnose
from initbench.errors import UserError
from initbench.inits import init_module
from initbench.models import build_model
from initbench.run import run
from initbench.telemetry import jacobian_singular_values

SMALL = ["dataset=circles", "trainer.device=cpu", "model.width=16", "logger=tensorboard"]


def run_diagnose_cli(*args: str):
    """``python src/diagnose.py *args`` from the repository root."""
    return run_cli("src/diagnose.py", *args, timeout=120)


def by_name(rows):
    return {row["name"]: row for row in rows}


def test_one_linear_layer_by_hand():
    # logits = x W^T with W = I: the activations are x itself
    model = nn.Sequential(OrderedDict(head=nn.Linear(2, 2, bias=False)))
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([0, 1])
    rows, loss = measure(model, x, y)
    (row,) = rows
    assert (row["name"], row["kind"], row["fan_in"], row["fan_out"]) == ("head", "linear", 2, 2)
    assert row["weight_std"] == pytest.approx(0.5)  # std of [1, 0, 0, 1]
    assert row["act_mean"] == pytest.approx(2.5)
    assert row["act_std"] == pytest.approx(math.sqrt(1.25))  # population std of 1, 2, 3, 4
    assert row["act_rms"] == pytest.approx(math.sqrt(7.5))
    # d(mean CE)/d logits = (softmax - onehot) / batch; softmax of (a, a+1) is (1-p, p)
    p = 1 / (1 + math.exp(-1))
    grads = [(1 - p - 1) / 2, p / 2, (1 - p) / 2, (p - 1) / 2]
    assert row["grad_std"] == pytest.approx(math.sqrt(sum(g * g for g in grads) / 4))
    assert loss == pytest.approx((-math.log(1 - p) - math.log(p)) / 2)
    # dL/dW = g^T x: rows of W get sum_b g[b, i] x[b]
    g = torch.tensor(grads).view(2, 2)
    assert row["weight_grad_std"] == pytest.approx((g.T @ x).std(correction=0).item(), rel=1e-6)
    assert row["nonfinite"] == 0 and row["grad_nonfinite"] == 0
    assert math.isnan(row["dead_frac"]) and math.isnan(row["saturated_frac"])  # no activation


def two_layer(activation: nn.Module, bias: float = 0.0, scale: float = 1.0) -> nn.Module:
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(4, 8), act1=activation, head=nn.Linear(8, 3)))
    with torch.no_grad():
        model.fc1.weight.mul_(scale)
        model.fc1.bias.fill_(bias)
    return model


def test_relu_layer_with_a_large_negative_bias_is_all_dead():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    rows = by_name(measure(two_layer(nn.ReLU(), bias=-100.0), x, y)[0])
    assert rows["fc1"]["dead_frac"] == 1.0
    assert rows["fc1"]["act_std"] == 0 and rows["fc1"]["act_mean"] == 0
    assert rows["fc1"]["grad_std"] > 0  # the gradient reaches the outputs ...
    assert rows["fc1"]["weight_grad_std"] == 0  # ... but not through the dead units
    alive = by_name(measure(two_layer(nn.ReLU(), bias=100.0), x, y)[0])
    assert alive["fc1"]["dead_frac"] == 0.0


def test_tanh_layer_with_huge_weights_is_saturated():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    rows = by_name(measure(two_layer(nn.Tanh(), scale=1e4), x, y)[0])
    assert rows["fc1"]["saturated_frac"] > 0.95
    assert math.isnan(rows["fc1"]["dead_frac"])
    assert rows["fc1"]["act_rms"] == pytest.approx(1.0, abs=0.05)


def test_nan_activations_are_counted_not_a_crash():
    torch.manual_seed(0)
    model = two_layer(nn.ReLU())
    with torch.no_grad():
        model.fc1.weight[2, 0] = float("nan")  # unit 2 is NaN for every example
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    rows = by_name(measure(model, x, y)[0])
    assert rows["fc1"]["nonfinite"] == 32
    assert math.isfinite(rows["fc1"]["act_std"])  # statistics of the finite values
    assert rows["head"]["nonfinite"] == 32 * 3  # everything downstream is NaN
    assert math.isnan(rows["head"]["act_std"])
    assert rows["fc1"]["grad_nonfinite"] > 0


def test_cli_writes_the_json_and_png_and_prints_a_table(tmp_path):
    proc = run_diagnose_cli(
        *SMALL, "model.depth=3", "activation=tanh", "init=xavier_uniform",
        "diagnose.batch_size=64", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "act_std" in proc.stdout and "fc3" in proc.stdout and "diagnose.json" in proc.stdout
    report = json.loads((tmp_path / "diagnose.json").read_text())
    layers = report["layers"]
    assert [row["name"] for row in layers] == ["fc1", "fc2", "fc3", "head"]
    for row in layers:
        assert set(LAYER_KEYS) <= set(row)
    assert [(r["fan_in"], r["fan_out"]) for r in layers] == [(2, 16), (16, 16), (16, 16), (16, 2)]
    assert all(r["dead_frac"] is None for r in layers)  # tanh: not a ReLU
    assert all(0 <= r["saturated_frac"] <= 1 for r in layers[:-1])
    assert report["config"]["init"]["name"] == "xavier_uniform"
    assert report["batch_size"] == 64 and report["samples"] == 1
    assert (tmp_path / "diagnose.png").stat().st_size > 1000
    assert not (tmp_path / "checkpoint.pt").exists()  # no training


def test_cli_bad_value_is_one_line(tmp_path):
    proc = run_diagnose_cli(*SMALL, "diagnose.dtype=float16", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "initbench: error: diagnose.dtype must be one of float32, float64" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "override, field",
    [("diagnose.samples=0", "diagnose.samples"), ("diagnose.batch_size=0", "diagnose.batch_size")],
)
def test_bad_diagnose_values_name_the_field(override, field):
    with pytest.raises(UserError, match=field):
        validate(compose_dict([override, "trainer.device=cpu"]))


def test_samples_give_medians_and_min_max_and_draw_zero_is_the_run():
    cfg = compose_dict([*SMALL, "model.depth=4", "init=kaiming_normal", "diagnose.samples=5"])
    prep = prepare(cfg)
    single = by_name(
        report_for({**cfg, "diagnose": {**cfg["diagnose"], "samples": 1}}, prep)["layers"]
    )
    report = report_for(cfg, prep)
    assert report["samples"] == 5
    for row in report["layers"]:
        lo, hi = row["range"]["act_std"]
        assert lo <= row["act_std"] <= hi
        assert lo <= single[row["name"]]["act_std"] <= hi  # draw 0 is among the draws
        assert lo < hi  # other seeds, other weights
    # the report never touches the run's model
    assert (
        prepare(cfg).model.state_dict()["fc1.weight"].equal(prep.model.state_dict()["fc1.weight"])
    )


def test_float64_keeps_scales_that_underflow_in_float32(tmp_path):
    # 8 ReLU layers of width 10 with N(0, 1e-12) weights: the std shrinks ~2e-6 per layer, so
    # the head's outputs (~5e-51) are below float32's smallest number (1.4e-45)
    overrides = ["dataset=gaussian", "dataset.dim=10", "trainer.device=cpu", "model.depth=8",
                 "model.width=10", "init=normal", "init.std=1e-6"]  # fmt: skip
    f64 = run_diagnose(compose_dict([*overrides, "diagnose.dtype=float64"]), tmp_path / "a")
    f32 = run_diagnose(compose_dict(overrides), tmp_path / "b")
    assert (f64["dtype"], f32["dtype"]) == ("float64", "float32")
    head64, head32 = by_name(f64["layers"])["head"], by_name(f32["layers"])["head"]
    assert 1e-52 < head64["act_std"] < 1e-49
    assert head32["act_std"] == 0  # underflowed
    assert by_name(f64["layers"])["fc1"]["act_std"] == pytest.approx(
        by_name(f32["layers"])["fc1"]["act_std"], rel=1e-5
    )  # where float32 can hold the numbers, both agree
    assert json.loads((tmp_path / "a" / "diagnose.json").read_text())["dtype"] == "float64"


def test_training_run_reports_at_step_0_only_on_a_fresh_start(tmp_path):
    cfg = compose_dict([*CPU_OVERRIDES, "trainer.epochs=1", "model.width=16"])
    run_dir = tmp_path / "run"
    run(cfg, run_dir, make_optimizer=instantiate(cfg["optimizer"]))
    report = json.loads((run_dir / "diagnose.json").read_text())
    assert [row["name"] for row in report["layers"]] == ["fc1", "fc2", "head"]
    assert (run_dir / "diagnose.png").exists()
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert "diagnose/std_vs_depth" in acc.Tags()["images"]
    assert any(t.startswith("diagnose/layers") for t in acc.Tags()["tensors"])
    (run_dir / "diagnose.json").unlink()
    # as if the process had been killed after its first epoch's checkpoint: it resumes
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    more = {**cfg, "trainer": {**cfg["trainer"], "epochs": 2}}
    summary = run(more, run_dir, make_optimizer=instantiate(cfg["optimizer"]))
    assert summary["epochs_completed"] == 2
    assert not (run_dir / "diagnose.json").exists()  # a resumed run does not report again


def test_at_start_false_skips_the_report(tmp_path):
    cfg = compose_dict([*CPU_OVERRIDES, "trainer.epochs=1", "diagnose.at_start=false"])
    run(cfg, tmp_path, make_optimizer=instantiate(cfg["optimizer"]))
    assert not (tmp_path / "diagnose.json").exists()


def test_several_draws_report_the_median_and_the_range():
    """Three draws whose values make the median differ from the mean (1, 2, 9: median 2, mean 4)."""

    def layer(value):
        row = {"name": "fc1", "kind": "linear", "fan_in": 2, "fan_out": 3}
        row.update({key: value for key in MEASURED})
        return row

    rows = aggregate([[layer(1.0)], [layer(9.0)], [layer(2.0)]])
    assert len(rows) == 1
    row = rows[0]
    assert (row["name"], row["kind"], row["fan_in"], row["fan_out"]) == ("fc1", "linear", 2, 3)
    for key in MEASURED:
        assert row[key] == 2.0, key
        assert row["range"][key] == [1.0, 9.0], key
    assert row["nonfinite"] == 2 and isinstance(row["nonfinite"], int)


# ---- the input-output Jacobian spectrum ----------------------------------------------------------


def deep_mlp(activation: str, init: str, depth: int = 12, width: int = 24, **hp) -> nn.Module:
    """A deep MLP with square hidden widths (input = width), no bias, float64."""
    model = build_model(
        "mlp", input_shape=(width,), num_classes=width, activation=activation, depth=depth,
        width=width, bias=False,
    )  # fmt: skip
    init_module(
        model, init, activation=activation, generator=torch.Generator().manual_seed(0), **hp
    )
    return model.double()


def spectrum(model: nn.Module, n_in: int, method: str = "auto") -> tuple[torch.Tensor, str]:
    x = torch.randn(4, n_in, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    values, used = jacobian_singular_values(model, x, method=method)
    return torch.cat(values), used


def test_orthogonal_deep_linear_net_is_an_exact_isometry():
    # Saxe et al. 2014; Pennington et al. 2017: J = W_L ... W_1 is orthogonal, every s = 1
    s, method = spectrum(deep_mlp("linear", "orthogonal"), 24)
    assert method == "exact" and s.numel() == 4 * 24
    torch.testing.assert_close(s, torch.ones_like(s), atol=1e-5, rtol=0)  # float32 weights


def test_gaussian_deep_linear_net_has_a_spread_spectrum():
    # LeCun normal keeps E[s^2] ~ 1 but the product of 12 Gaussian matrices spreads it:
    # the smallest singular values collapse by orders of magnitude (Pennington et al. 2017)
    s, _ = spectrum(deep_mlp("linear", "lecun_normal"), 24)
    assert float((s**2).mean()) == pytest.approx(1.0, abs=0.6)
    assert float(s.max() / s.min()) > 100


def test_relu_net_is_not_an_isometry_even_when_orthogonal():
    s, _ = spectrum(deep_mlp("relu", "orthogonal", gain="auto"), 24)
    assert float(s.max() / s.min()) > 10
    assert float(s.min()) < 0.5


def tiny_cnn() -> nn.Module:
    model = build_model(
        "cnn", input_shape=(1, 8, 8), num_classes=10, activation="tanh", depth=3, channels=4
    )
    init_module(
        model, "kaiming_normal", activation="tanh", generator=torch.Generator().manual_seed(0)
    )
    return model.double()


def test_cnn_lanczos_estimate_matches_the_exact_top_singular_values():
    model = tiny_cnn()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact, m1 = jacobian_singular_values(model, x, method="exact")
    approx, m2 = jacobian_singular_values(
        model, x, method="lanczos", k=4, generator=torch.Generator().manual_seed(2)
    )
    assert (m1, m2) == ("exact", "lanczos")
    for e, a in zip(exact, approx, strict=True):
        assert e.numel() == 10 and a.numel() == 4
        torch.testing.assert_close(a, e[:4], rtol=1e-6, atol=1e-9)
    # auto: a CNN classifier has few logits, so the exact method is cheap and used
    assert jacobian_singular_values(model, x)[1] == "exact"
    with pytest.raises(ValueError, match="method must be one of auto, exact, lanczos"):
        jacobian_singular_values(model, x, method="svd")


def test_report_has_the_jacobian_and_sinks_get_histogram_and_scalars(tmp_path):
    overrides = ["dataset=gaussian", "dataset.dim=16", "dataset.num_classes=16",
                 "trainer.device=cpu", "model.depth=6", "model.width=16", "model.bias=false",
                 "activation=linear", "init=orthogonal", "logger=tensorboard"]  # fmt: skip
    report = run_diagnose(compose_dict(overrides), tmp_path)
    jac = report["jacobian"]
    assert jac["method"] == "exact" and jac["inputs"] == 4 and len(jac["singular_values"]) == 64
    assert jac["min"] == pytest.approx(1.0, abs=1e-4) and jac["max"] == pytest.approx(1, abs=1e-4)
    assert jac["mean_sq"] == pytest.approx(1.0, abs=1e-4)
    saved = json.loads((tmp_path / "diagnose.json").read_text())["jacobian"]
    assert saved["singular_values"] == pytest.approx(jac["singular_values"])
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    assert "diagnose/jacobian" in events.Tags()["histograms"]
    assert events.Scalars("diagnose/jacobian_max")[0].value == pytest.approx(1.0, abs=1e-4)
    off = run_diagnose(compose_dict([*overrides, "diagnose.jacobian=false"]), tmp_path / "off")
    assert "jacobian" not in off


def test_cli_writes_the_jacobian_spectrum(tmp_path):
    proc = run_diagnose_cli(
        *SMALL, "model.depth=3", "diagnose.jacobian=true", f"hydra.run.dir={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr
    assert "input-output Jacobian (exact, 4 inputs)" in proc.stdout
    jac = json.loads((tmp_path / "diagnose.json").read_text())["jacobian"]
    assert set(jac) >= {"singular_values", "mean_sq", "max", "min", "method", "inputs"}
    assert len(jac["singular_values"]) == 4 * 2  # circles: 2 logits per input


def test_a_non_finite_jacobian_is_reported_as_null_not_a_crash(tmp_path):
    overrides = [*SMALL, "model.depth=3", "init=normal", "init.std=1e30"]  # overflows to inf
    report = run_diagnose(compose_dict(overrides), tmp_path)
    jac = json.loads((tmp_path / "diagnose.json").read_text())["jacobian"]
    assert jac["singular_values"] == [None] * 8 and jac["nonfinite"] == 8
    assert jac["max"] is None and report["jacobian"]["mean_sq"] is None
