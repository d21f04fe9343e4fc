"""The schemes that train deep plain networks: TAT (activation=tat with init=tat), ZerO
(init=zero_init), MetaInit and GradInit, each against its reference: TAT's slope against DeepMind's
``dks`` solver, ZerO's matrices against the paper's construction, MetaInit's GradQuotient falling,
GradInit's gradient-norm constraint; then their effect at step 0, their cost in summary.json and
the sinks, and packs and a user's network."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import signal

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from helpers import CPU_OVERRIDES, compose_dict
from initbench import run as run_module
from initbench.errors import Interrupted, UserError
from initbench.inits import InitContext, get_init, init_module
from initbench.inits.learned import gradient_quotient
from initbench.models import build_model, make_activation
from initbench.models.activations import TAT, leaky_relu_cmap, tat_slope
from initbench.run import run
from initbench.run_pack import run_pack

torch.set_num_threads(2)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def deep_mlp(depth: int, width: int, /, activation: str = "relu", **act_params) -> nn.Module:
    return build_model(
        "mlp", input_shape=(width,), num_classes=10, activation=activation,
        activation_params=act_params, depth=depth, width=width, dropout=0.0,
    )  # fmt: skip


# ---- TAT --------------------------------------------------------------------------------------


def dks_params(depth: int, eta: float) -> tuple[float, float]:
    """(negative slope, output scale) from DeepMind's reference solver for a plain net."""
    activation_transform = pytest.importorskip("dks.base.activation_transform")

    def subnet_max(x, r_fn):
        for _ in range(depth):
            x = r_fn(x)
        return x

    params = activation_transform._get_activations_params(
        ["leaky_relu"], method="TAT", tat_params={"c_val_0_target": eta},
        subnet_max_func=subnet_max,
    )["leaky_relu"]  # fmt: skip
    return float(params["negative_slope"]), float(params["output_scale"])


@pytest.mark.parametrize("depth, eta", [(30, 0.9), (50, 0.9), (100, 0.9), (30, 0.5), (8, 0.6)])
def test_tat_slope_and_scale_match_the_dks_solver(depth: int, eta: float) -> None:
    slope, scale = dks_params(depth, eta)
    module = TAT(eta=eta, depth=depth)
    assert float(module.negative_slope) == pytest.approx(slope, abs=1e-6)
    assert float(module.scale) == pytest.approx(scale, abs=1e-6)


def test_tat_for_30_layers_is_the_published_figure() -> None:
    assert tat_slope(30, 0.9) == pytest.approx(0.3027, abs=5e-5)
    assert math.sqrt(2 / (1 + tat_slope(30, 0.9) ** 2)) == pytest.approx(1.3536, abs=5e-5)


def test_tat_keeps_a_unit_second_moment_and_its_cmap_is_the_formula() -> None:
    """E[phi(z)^2] = 1 for z ~ N(0, 1) (gain 1), and the correlation of phi over correlated
    Gaussian pairs is C(c), by Monte Carlo on 4e6 pairs."""
    phi = TAT(eta=0.9, depth=30).double()
    z = torch.randn(4_000_000, generator=gen(), dtype=torch.float64)
    assert float((phi(z) ** 2).mean()) == pytest.approx(1.0, abs=3e-3)
    w = torch.randn(4_000_000, generator=gen(1), dtype=torch.float64)
    alpha = float(phi.negative_slope)
    for c in (0.0, 0.5, 0.9):
        u = c * z + math.sqrt(1 - c * c) * w
        assert float((phi(z) * phi(u)).mean()) == pytest.approx(leaky_relu_cmap(c, alpha), abs=3e-3)


def test_tat_solves_for_the_depth_of_the_network_it_is_in() -> None:
    for depth in (16, 30):
        model = deep_mlp(depth, 16, "tat")
        slopes = {float(m.negative_slope) for m in model.modules() if isinstance(m, TAT)}
        assert len(slopes) == 1 and slopes.pop() == pytest.approx(tat_slope(depth, 0.9))
    cnn = build_model("cnn", input_shape=(3, 32, 32), num_classes=10, activation="tat", depth=30)
    assert float(cnn.act30.negative_slope) == pytest.approx(0.3027, abs=5e-5)
    fixed = deep_mlp(5, 16, "tat", **{"depth": 50})  # activation.depth pins it
    assert float(fixed.act1.negative_slope) == pytest.approx(tat_slope(50, 0.9))


def test_an_unsolved_tat_or_an_unreachable_eta_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not solved"):
        make_activation("tat")(torch.zeros(2))
    with pytest.raises(ValueError, match="2 leaky-ReLU layers cannot reach C\\(0\\) = eta = 0.9"):
        deep_mlp(2, 16, "tat")
    with pytest.raises(ValueError, match=r"activation.eta must be a finite number in \[0, 1\)"):
        make_activation("tat", eta=1.0)


def test_tat_network_output_correlation_at_its_depth_is_eta() -> None:
    """The point of TAT: two orthogonal inputs through 30 TAT layers with TAT's weights come out
    with correlation ~ eta = 0.9 (ReLU + He: ~1; finite width 512 adds a few percent)."""
    width, depth = 512, 30
    x = torch.randn(2, width, generator=gen(3), dtype=torch.float64)
    x[1] -= (x[1] @ x[0]) / (x[0] @ x[0]) * x[0]  # orthogonal pair
    x *= math.sqrt(width) / x.norm(dim=1, keepdim=True)  # q = 1 per unit

    def last_hidden_cosine(activation: str, init: str) -> float:
        cosines = []
        for seed in range(4):
            model = deep_mlp(depth, width, activation).double()
            init_module(model, init, activation=activation, generator=gen(seed))
            with torch.no_grad():
                h = nn.Sequential(*list(model.children())[:-1])(x)  # everything but the head
            cosines.append(float(torch.nn.functional.cosine_similarity(h[0], h[1], dim=0)))
        return float(np.mean(cosines))

    assert last_hidden_cosine("tat", "tat") == pytest.approx(0.9, abs=0.04)
    assert last_hidden_cosine("relu", "kaiming_normal") > 0.97


@pytest.mark.parametrize(
    "shape", [(64, 256), (256, 64), (128, 128), (96, 32, 3, 3), (32, 96, 3, 3)]
)
def test_scaled_orthogonal_keeps_each_units_second_moment(shape: tuple[int, ...]) -> None:
    weight = torch.empty(shape, dtype=torch.float64)
    get_init("tat").fn(weight, InitContext(1.0, gen()))
    c_out, c_in = shape[:2]
    tap = weight if weight.dim() == 2 else weight[:, :, 1, 1]
    if weight.dim() > 2:
        off = weight.clone()
        off[:, :, 1, 1] = 0
        assert torch.all(off == 0)  # delta: the centre tap only
    scale = max(1.0, math.sqrt(c_out / c_in))
    gram = tap @ tap.T if c_out <= c_in else tap.T @ tap
    torch.testing.assert_close(gram, scale**2 * torch.eye(min(c_out, c_in), dtype=gram.dtype))
    x = torch.randn(c_in, 4000, generator=gen(), dtype=torch.float64)
    q_in, q_out = float((x**2).mean()), float(((tap @ x) ** 2).mean())
    assert q_out == pytest.approx(q_in, rel=0.03)


# ---- ZerO -------------------------------------------------------------------------------------


def paper_zero(p: int, q: int) -> np.ndarray:
    """ZerO's Algorithm 1 as the authors' code writes it: I (p = q), I* (p < q), else
    c I*_{p x 2^m} H_m I*_{2^m x q}, c = 2^(-m/2), m = ceil(log2 p), H from scipy."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    if p <= q:
        return np.eye(p, q)
    m = math.ceil(math.log2(p))
    return np.eye(p, 2**m) @ (scipy_linalg.hadamard(2**m) / 2 ** (m / 2)) @ np.eye(2**m, q)


@pytest.mark.parametrize(
    "shape", [(16, 16), (8, 20), (20, 8), (100, 3), (10, 6, 3, 3), (6, 10, 5, 5)]
)
def test_zero_init_is_the_papers_matrix(shape: tuple[int, ...]) -> None:
    layer = (
        nn.Linear(shape[1], shape[0])
        if len(shape) == 2
        else nn.Conv2d(shape[1], shape[0], shape[2])
    )
    init_module(layer, "zero_init", generator=gen())
    expected = torch.as_tensor(paper_zero(*shape[:2]), dtype=torch.float32)
    if len(shape) == 2:
        torch.testing.assert_close(layer.weight.detach(), expected)
    else:
        centre = shape[2] // 2
        torch.testing.assert_close(layer.weight.detach()[:, :, centre, centre], expected)
        assert int((layer.weight != 0).sum()) == int((expected != 0).sum())
    assert torch.all(layer.bias == 0)


def test_zero_init_draws_nothing_and_tall_layers_keep_norms() -> None:
    a, b = deep_mlp(4, 32), deep_mlp(4, 32)
    init_module(a, "zero_init", generator=gen(0))
    init_module(b, "zero_init", generator=gen(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    tall = nn.Linear(5, 16, bias=False)  # out = 2^m: H's columns / 4 are orthonormal
    init_module(tall, "zero_init")
    x = torch.randn(5, generator=gen())
    assert float(tall(x).detach().norm()) == pytest.approx(float(x.norm()), rel=1e-5)


# ---- MetaInit ---------------------------------------------------------------------------------


def test_gradient_quotient_is_the_formula_on_a_quadratic() -> None:
    """L = a w^2 / 2 (one weight): g = a w, Hg = a^2 w, GQ = |(g - Hg)/g - 1| = |a|."""
    w = torch.tensor([0.7], requires_grad=True)
    for a in (0.3, 2.0):
        gq = gradient_quotient(a * (w * w).sum() / 2, [w], eps=1e-12)
        assert float(gq.detach()) == pytest.approx(a, rel=1e-5)


def test_metainit_lowers_the_gradient_quotient_and_only_rescales_the_start() -> None:
    model = deep_mlp(10, 64)
    x, y = torch.randn(128, 64, generator=gen(1)), torch.randint(10, (128,), generator=gen(2))
    rows = init_module(model, "metainit", data=(x, y), generator=gen(), steps=100)
    start = deep_mlp(10, 64)
    init_module(start, "kaiming_normal", generator=gen())
    gq = [r["gq"] for r in rows]
    assert np.mean(gq[-3:]) < 0.2 * gq[0], gq
    layers = [(a, b) for a, b in zip(model, start, strict=True) if isinstance(a, nn.Linear)]
    for a, b in layers:  # same direction as the start's draw: only the norm moved
        cos = torch.nn.functional.cosine_similarity(a.weight.flatten(), b.weight.flatten(), dim=0)
        assert float(cos.detach()) == pytest.approx(1.0, abs=1e-5)
    assert any(abs(float(a.weight.norm() / b.weight.norm()) - 1) > 0.05 for a, b in layers)


# ---- GradInit ---------------------------------------------------------------------------------


def test_gradinit_keeps_the_gradient_norm_bound_and_scales_each_tensor() -> None:
    """A start whose gradient norm is far above gamma: constraint steps bring it under, the
    scales stay >= min_scale, and each tensor is its start's draw times its scale."""
    model = deep_mlp(6, 64)
    x, y = torch.randn(512, 64, generator=gen(1)), torch.randint(10, (512,), generator=gen(2))
    rows = init_module(model, "gradinit", data=(x, y), generator=gen(), steps=120, gamma=0.5,
                       lr=0.05)  # fmt: skip
    steps, summary = rows[:-1], rows[-1]
    assert steps[0]["gnorm"] > 0.5 and steps[0]["constraint"] == 1
    assert summary["constraint_steps"] >= 1 and summary["objective_steps"] >= 1
    assert summary["min_scale"] >= 0.01
    # the bound holds at the end: the final weights' gradient norm on the batch
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.norm() > 0])
    assert float(torch.sqrt(sum((g * g).sum() for g in grads))) < 0.5 * 1.5
    start = deep_mlp(6, 64)
    init_module(start, "kaiming_normal", generator=gen())
    for a, b in zip(model.parameters(), start.parameters(), strict=True):
        if b.norm() > 0:
            ratio = a.detach() / b.detach()
            assert float(ratio.std()) < 1e-5 and float(ratio.mean()) >= 0.01 - 1e-6


def test_gradinit_needs_labels_and_refuses_a_data_dependent_start() -> None:
    model = deep_mlp(3, 8)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="gradinit needs labelled training data"):
        init_module(model, "gradinit", data=torch.randn(16, 8), steps=2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(
        ValueError, match="start must name a closed-form scheme, one of .*got 'lsuv'"
    ):
        init_module(model, "gradinit", data=torch.randn(16, 8), start="lsuv")


# ---- runs: step 0, cost, packs ----------------------------------------------------------------

RUN = [*CPU_OVERRIDES, "trainer.epochs=1", "dataset.n_train=256", "model.depth=6",
       "model.width=32", "model.dropout=0"]  # fmt: skip
FAST = {"metainit": ["init.steps=5"], "gradinit": ["init.steps=5"]}


SCHEME_RUNS = [("tat", "tat model.depth=16"), ("zero_init", "relu"), ("metainit", "relu"),
               ("gradinit", "relu")]  # fmt: skip


@pytest.mark.parametrize("init, activation", SCHEME_RUNS)
def test_each_scheme_trains_and_records_its_cost(tmp_path, init: str, activation: str) -> None:
    extra = [f"init={init}", *f"activation={activation}".split(), *FAST.get(init, [])]
    cfg = compose_dict([*RUN, *extra])
    summary = run(cfg, tmp_path, torch.optim.Adam)
    assert summary["status"] == "finished" and math.isfinite(summary["final"]["train_loss"])
    cost = summary["init_cost"]
    assert cost["device"] == "cpu" and cost["seconds"] > 0
    if init == "metainit":  # a probe, then per step one forward and 3 gradients (g, Hg, dGQ)
        assert (cost["forward_passes"], cost["backward_passes"]) == (1 + 5, 3 * 5)
    elif init == "gradinit":  # per step g and its gradient; a look-ahead forward when it holds
        objective_steps = summary["init_report"][-1]["objective_steps"]
        assert (cost["forward_passes"], cost["backward_passes"]) == (5 + objective_steps, 2 * 5)
    else:
        assert cost["forward_passes"] == cost["backward_passes"] == 0
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"init/seconds", "init/forward_passes", "init/backward_passes"} <= set(
        events.Tags()["scalars"]
    )
    diag = json.loads((tmp_path / "diagnose.json").read_text())
    assert diag["init_cost"]["forward_passes"] == cost["forward_passes"]


def test_a_resumed_run_keeps_the_cost_its_init_had(tmp_path, monkeypatch) -> None:
    """The init runs again when a run resumes (its weights then come from the checkpoint);
    summary.json keeps what the init cost when the run started."""
    cfg = compose_dict([*RUN, "init=metainit", "init.steps=5", "trainer.epochs=2"])
    polls = itertools.count(1)

    @contextlib.contextmanager
    def stop_in_epoch_2():
        yield lambda: signal.SIGTERM if next(polls) >= 6 else None  # 4 steps an epoch

    monkeypatch.setattr(run_module, "stop_on_signals", stop_in_epoch_2)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path, torch.optim.Adam)
    started = json.loads((tmp_path / "summary.json").read_text())["init_cost"]
    monkeypatch.undo()
    resumed = run(cfg, tmp_path, torch.optim.Adam)
    assert resumed["status"] == "finished" and resumed["init_cost"] == started


def test_learned_and_data_dependent_schemes_pack_as_their_unpacked_runs(tmp_path) -> None:
    groups = [
        [["init=metainit", "init.steps=5", "seed=0"], ["init=gradinit", "init.steps=5", "seed=1"],
         ["init=lsuv", "seed=2"], ["init=zero_init", "seed=3"]],
        [["init=tat", "activation=tat", "model.depth=16", "seed=0"],
         ["init=tat", "activation=tat", "model.depth=16", "seed=1"]],
    ]  # fmt: skip
    for n, members in enumerate(groups):
        cfgs = [compose_dict([*RUN, "trainer.holdout=56", *m]) for m in members]
        dirs = [tmp_path / f"pack{n}" / c["run_name"] for c in cfgs]
        summaries = run_pack(cfgs, dirs, torch.optim.Adam)
        for cfg, summary in zip(cfgs, summaries, strict=True):
            alone = run(cfg, tmp_path / f"alone{n}" / cfg["run_name"], torch.optim.Adam)
            assert summary["init_report"] == alone["init_report"]
            assert "holdout_acc" in summary["final"]
            for key, value in alone["final"].items():
                assert summary["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


# ---- the holdout split: the validation data a learning rate is picked on ---------------------


def test_a_run_with_a_holdout_records_it_each_epoch_and_refuses_one_too_big(tmp_path) -> None:
    cfg = compose_dict([*RUN, "trainer.holdout=56", "trainer.epochs=2"])
    summary = run(cfg, tmp_path / "ok", torch.optim.Adam)
    rows = [
        json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [sorted(k for k in r if k.startswith("holdout/")) for r in rows] == [
        ["holdout/acc", "holdout/loss"]] * 2  # fmt: skip
    assert summary["final"]["holdout_acc"] == rows[-1]["holdout/acc"]
    events = EventAccumulator(str(tmp_path / "ok" / "tensorboard")).Reload()
    assert "holdout/acc" in events.Tags()["scalars"]
    too_big = compose_dict([*RUN, "trainer.holdout=256"])
    with pytest.raises(
        UserError,
        match=r"trainer.holdout must be smaller than the 256 training examples of circles "
        r"\(got 256\)",
    ):
        run(too_big, tmp_path / "bad", torch.optim.Adam)
    failed = json.loads((tmp_path / "bad" / "summary.json").read_text())  # recorded, not trained
    assert failed["status"] == "failed" and not (tmp_path / "bad" / "metrics.jsonl").exists()


def test_the_step0_report_measures_tats_output_correlation_at_eta() -> None:
    """Through the report's own measurement (diagnose.measure, column act_cos): nearly
    orthogonal Gaussian inputs come out of 30 TAT layers with mean cosine ~ eta = 0.9, out of
    30 ReLU layers with He weights at the ReLU C-map's value, near 1."""
    from initbench.diagnose import measure

    x = torch.randn(128, 256, generator=gen(5))
    y = torch.randint(10, (128,), generator=gen(6))

    def last_cos(activation: str, init: str) -> float:
        model = deep_mlp(30, 256, activation)
        init_module(model, init, activation=activation, generator=gen())
        rows, _ = measure(model, x, y)
        slope = float(model.act1.negative_slope) if activation == "tat" else 0.0
        # one layer: C(0), the C-map at 0 (ReLU: 1/pi)
        assert rows[0]["act_cos"] == pytest.approx(leaky_relu_cmap(0.0, slope), abs=0.03)
        return float(rows[-2]["act_cos"])  # the last hidden layer (rows[-1] is the head)

    assert last_cos("tat", "tat") == pytest.approx(0.9, abs=0.04)
    relu_theory = 0.0
    for _ in range(30):
        relu_theory = leaky_relu_cmap(relu_theory, 0.0)
    assert last_cos("relu", "kaiming_normal") == pytest.approx(relu_theory, abs=0.02)
    assert relu_theory > 0.95
