"""The residual family: model=resnet and the schemes made for it (Fixup, SkipInit, ReZero,
ZerO's residual form), each checked against its paper's construction."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import compose_dict, write_cifar
from initbench import inits
from initbench.build import check_structure, estimate_run_memory
from initbench.errors import UserError
from initbench.models import Gate, ResidualBlock, ScalarBias, build_model
from initbench.models.residual import added_parameters, branch_layers, residual_blocks
from initbench.run import run
from initbench.run_pack import check_pack, run_pack
from initbench.sweep.combinations import Combination
from initbench.sweep.jobs import pack_jobs
from initbench.telemetry.residual import BranchMonitor

RESIDUAL = ("fixup", "skipinit", "rezero")


def resnet(depth=20, width=16, shape=(3, 32, 32), **kwargs):
    return build_model("resnet", input_shape=shape, num_classes=10, depth=depth, width=width,
                       **kwargs)  # fmt: skip


def initialized(scheme, depth=20, width=8, seed=0, **hparams):
    model = resnet(depth, width)
    inits.init_module(model, scheme, generator=torch.Generator().manual_seed(seed), **hparams)
    return model


def count(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- the model


@pytest.mark.parametrize("depth, params", [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_resnet_has_he_et_al_s_parameter_counts(depth, params):
    """He et al. 2016, Table 6: ResNet-20/56/110 for CIFAR have 0.27M, 0.85M and 1.7M
    parameters (widths 16, 32, 64; option A shortcuts have none)."""
    model = resnet(depth)
    assert count(model) == pytest.approx(params, rel=0.02)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # 6n+2 weight layers: the convs and the head
    assert len(residual_blocks(model)) == (depth - 2) // 2  # 3 stages of n blocks


def test_resnet_shapes_and_shortcuts():
    model = resnet(20, 4, shape=(1, 28, 28))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    blocks = dict(residual_blocks(model))
    down = blocks["layer2.block1"].shortcut
    x = torch.randn(1, 4, 8, 8)
    y = down(x)  # option A: subsampled, zero channels appended
    assert y.shape == (1, 8, 4, 4)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2]) and not y[:, 4:].any()
    assert isinstance(blocks["layer1.block2"].shortcut, nn.Identity)
    bn = resnet(20, 4, norm="batch")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 19


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 21}, r"model.depth must be 6n\+2 .*\(got 21\)"),
        ({"depth": 2}, r"model.depth must be 6n\+2"),
        ({"width": 0}, r"model.width must be"),
        ({"norm": "layer"}, r"model.norm must be one of none, batch"),
    ],
)
def test_bad_resnet_arguments_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet(**{"depth": 20, **kwargs})


def test_resnet_needs_images():
    with pytest.raises(ValueError, match="model=resnet needs image input"):
        build_model("resnet", input_shape=(24,), num_classes=3)


# ----------------------------------------------------------------------------- Fixup


def fixup_reference(model, x):
    """The Fixup ResNet's forward pass written from the authors' equations (their
    FixupBasicBlock and FixupResNet), reading the parameters of ``model``."""
    conv = functools.partial(F.conv2d, padding=1)
    h = F.relu(conv(x, model.conv1.weight) + model.bias_act1.bias)
    for _, block in residual_blocks(model):
        b = block.branch
        x = h
        out = F.conv2d(x + block.entry.bias, b.conv1.weight, stride=b.conv1.stride, padding=1)
        out = F.relu(out + b.bias_act1.bias)
        out = conv(out + b.bias_conv2.bias, b.conv2.weight)
        out = out * block.gate.scale + block.gate.bias
        if isinstance(block.shortcut, nn.Identity):
            identity = x
        else:
            identity = F.avg_pool2d(x + block.entry.bias, 1, stride=2)
            identity = torch.cat([identity, torch.zeros_like(identity)], 1)
        h = F.relu(out + identity)
    h = h.mean((2, 3))
    return F.linear(h + model.bias_head.bias, model.head.weight, model.head.bias)


def test_fixup_model_computes_the_authors_block():
    model = initialized("fixup", depth=14, width=4)
    torch.manual_seed(1)
    with torch.no_grad():  # every scalar away from its initial value, every weight non-zero
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(model(x), fixup_reference(model, x), atol=1e-5)


def test_fixup_draws_the_paper_s_weights():
    model = initialized("fixup", depth=56, width=16, seed=3)
    blocks = residual_blocks(model)
    L = len(blocks)  # 27 branches of m = 2 layers: scale L^(-1/(2m-2)) = L^(-1/2)
    for _, block in blocks:
        first, last = branch_layers(block)
        assert not last.weight.any()  # the branch's last layer at zero
        fan_out = first.weight.shape[0] * 9
        expected = math.sqrt(2 / fan_out) * L**-0.5
        assert first.weight.std().item() == pytest.approx(expected, rel=0.1)
    assert not model.head.weight.any() and not model.head.bias.any()  # the classifier at zero
    assert model.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.3)
    # the added parameters: 5 per block (bias1a, bias1b, bias2a, scale, bias2b) and 2 outside
    assert added_parameters(model) == 5 * L + 2
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    assert all(g.scale.item() == 1 and g.bias.item() == 0 for g in gates)


def test_fixup_pooled_statistics_of_a_branch_layer_match_he_times_l_power():
    """The first layer of every branch of ResNet-110, pooled (> 200k draws): N(0, 2/fan_out/L)."""
    model = initialized("fixup", depth=110, width=16, seed=0)
    blocks = residual_blocks(model)
    L = len(blocks)
    pooled = torch.cat([
        branch_layers(b)[0].weight.flatten() * math.sqrt(branch_layers(b)[0].weight.shape[0] * 9)
        for _, b in blocks
    ])  # fmt: skip
    assert pooled.numel() > 200_000
    assert pooled.std().item() == pytest.approx(math.sqrt(2 / L), rel=0.01)
    assert abs(pooled.mean().item()) < 0.01 * math.sqrt(2 / L)


def residual_mlp(blocks, width):
    """A user's network made of ResidualBlocks with Linear branches (no activation: a deep
    linear residual net, where the variance at depth has a closed form)."""
    layers = [nn.Linear(width, width)]
    for _ in range(blocks):
        branch = nn.Sequential(nn.Linear(width, width), nn.Identity(), nn.Linear(width, width))
        layers.append(ResidualBlock(branch))
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def test_fixup_scaling_keeps_the_output_variance_at_depth():
    """Fixup's L^(-1/(2m-2)): with each branch's last layer drawn as He (not zero), a linear
    residual net of L branches of m = 2 layers has E|x_L|^2 = (1 + 1/L)^L E|x_0|^2 (about e),
    where He init alone doubles it at every block (2^L)."""
    L, width = 50, 256
    torch.manual_seed(0)
    x0 = torch.randn(512, width)
    ratios = {}
    for scheme in ("fixup", "kaiming_normal"):
        model = residual_mlp(L, width)
        inits.init_module(model, scheme, activation="linear", mode="fan_in",
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
        with torch.no_grad():
            for _, block in residual_blocks(model):  # the last layers, He instead of zero
                nn.init.normal_(branch_layers(block)[-1].weight, 0, width**-0.5)
            h = x0
            for block in list(model)[1:-1]:
                h = block(h)
        ratios[scheme] = (h.pow(2).mean() / x0.pow(2).mean()).item()
    assert ratios["fixup"] == pytest.approx((1 + 1 / L) ** L, rel=0.15)
    assert ratios["kaiming_normal"] > 1e10  # about 2^50


# ----------------------------------------------------------------------------- every scheme


@pytest.mark.parametrize("scheme", [*RESIDUAL, "zero_init"])
def test_every_branch_starts_at_zero(scheme):
    model = initialized(scheme, depth=20, width=8)
    x = torch.randn(4, 3, 32, 32)
    with BranchMonitor(model) as monitor:
        model(x)
    rows = monitor.rows()
    assert len(rows) == 9
    assert all(r["branch_rms"] == 0 and r["shortcut_rms"] > 0 for r in rows)
    assert all(r["branch_ratio"] == 0 for r in rows)


def test_he_init_branches_are_as_large_as_the_stream_and_it_explodes():
    model = initialized("kaiming_normal", depth=56, width=8)
    with BranchMonitor(model) as monitor:
        model(torch.randn(8, 3, 32, 32))
    rows = monitor.rows()
    assert all(r["branch_ratio"] > 0.3 for r in rows)
    assert rows[-1]["out_rms"] > 1e3 * rows[0]["out_rms"]


@pytest.mark.parametrize("scheme, per_block", [("skipinit", 1), ("rezero", 1), ("fixup", 5)])
def test_residual_schemes_add_their_scalars_once(scheme, per_block):
    model = resnet(20, 8)
    before = count(model)
    for seed in (0, 1):  # a second call resets the scalars, it adds none
        inits.init_module(model, scheme, generator=torch.Generator().manual_seed(seed))
    extra = 2 if scheme == "fixup" else 0
    assert count(model) - before == added_parameters(model) == 9 * per_block + extra


def test_skipinit_keeps_the_post_activation_and_rezero_removes_it():
    skip, rezero = initialized("skipinit", alpha=0.25), initialized("rezero")
    for _, block in residual_blocks(skip):
        assert isinstance(block.post, nn.ReLU) and block.gate.scale.item() == 0.25
    for _, block in residual_blocks(rezero):
        assert isinstance(block.post, nn.Identity) and block.gate.scale.item() == 0
    x = torch.randn(2, 3, 32, 32)
    h = F.relu(rezero.conv1(x))  # at alpha = 0 the blocks are the shortcuts
    for _, block in residual_blocks(rezero):
        h = block.shortcut(h)
    assert torch.allclose(rezero.head(h.mean((2, 3))), rezero(x), atol=1e-6)


def test_a_model_changed_for_one_scheme_refuses_another():
    model = initialized("skipinit")
    with pytest.raises(ValueError, match="changed for init 'skipinit'; build the model again"):
        inits.init_module(model, "fixup")


def test_zero_init_residual_form_is_deterministic():
    a, b = initialized("zero_init", seed=0), initialized("zero_init", seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    for _, block in residual_blocks(a):
        first, last = branch_layers(block)
        assert not last.weight.any()
        c_out, c_in = first.weight.shape[:2]
        centre = first.weight[:, :, 1, 1]
        if c_out == c_in:
            assert torch.equal(centre, torch.eye(c_out))
        assert first.weight[:, :, 0, 0].abs().sum() == 0


@pytest.mark.parametrize("scheme", RESIDUAL)
def test_residual_schemes_refuse_a_network_without_blocks(scheme):
    mlp = build_model("mlp", input_shape=(8,), num_classes=2)
    with pytest.raises(ValueError, match=rf"init '{scheme}' is made for residual networks.*"
                                         r"model=resnet"):  # fmt: skip
        inits.init_module(mlp, scheme)
    assert count(mlp) == count(build_model("mlp", input_shape=(8,), num_classes=2))


def test_bad_alpha_is_refused():
    with pytest.raises(ValueError, match="alpha must be"):
        inits.check_init_params("rezero", alpha="big")


def test_every_init_runs_on_a_resnet():
    """The whole registry on one network: every scheme draws finite weights (data-dependent
    ones on a small batch)."""
    batch = (torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    for scheme in inits.list_inits():
        model = resnet(8, 4)
        hp = {"steps": 2} if scheme in ("metainit", "gradinit") else {}
        inits.init_module(model, scheme, data=batch,
                          generator=torch.Generator().manual_seed(0), **hp)  # fmt: skip
        assert all(torch.isfinite(p).all() for p in model.parameters()), scheme


# ----------------------------------------------------------------------------- the run


@pytest.fixture
def cifar(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py", n_per_batch=8, n_test=8)
    return tmp_path / "data"


def cfg_for(cifar, *overrides):
    return compose_dict([
        "model=resnet", "model.depth=8", "model.width=4", "dataset=cifar10",
        f"data_dir={cifar}", "trainer.device=cpu", "trainer.epochs=1",
        "trainer.batch_size=10", "logger=tensorboard", "telemetry.every_n_steps=2",
        *overrides,
    ])  # fmt: skip


def test_a_fixup_run_trains_reports_its_blocks_and_counts_its_scalars(cifar, tmp_path):
    cfg = cfg_for(cifar, "init=fixup")
    summary = run(cfg, tmp_path / "run", functools.partial(torch.optim.SGD, lr=0.01))
    assert summary["status"] == "finished"
    plain = count(resnet(8, 4))
    assert summary["n_params"] == plain + 5 * 3 + 2
    assert summary["n_params_added"] == 5 * 3 + 2
    diag = json.loads((tmp_path / "run" / "diagnose.json").read_text())
    assert [b["name"] for b in diag["blocks"]] == ["layer1.block1", "layer2.block1",
                                                    "layer3.block1"]  # fmt: skip
    assert all(b["branch_rms"] == 0 and b["branch_ratio"] == 0 for b in diag["blocks"])
    # the memory estimate counts the added scalars too
    assert estimate_run_memory(cfg).model >= estimate_run_memory(cfg_for(cifar)).model


def test_training_telemetry_logs_each_block(cifar, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = cfg_for(cifar, "init=skipinit")
    run(cfg, tmp_path / "run", functools.partial(torch.optim.SGD, lr=0.01))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    for key in ("branch_rms", "shortcut_rms", "out_rms", "branch_ratio"):
        assert f"stats/{key}/layer2.block1" in tags
    ratio = events.Scalars("stats/branch_ratio/layer2.block1")
    assert ratio[0].step == 0 and ratio[0].value == 0  # alpha = 0 at step 0
    assert ratio[-1].value > 0  # alpha moved


@pytest.mark.parametrize("scheme", RESIDUAL)
def test_a_residual_scheme_on_an_mlp_is_refused_before_anything_runs(scheme):
    cfg = compose_dict([f"init={scheme}", "dataset=circles"])
    with pytest.raises(UserError, match="made for residual networks"):
        check_structure(cfg)


def test_a_pack_keeps_one_structure_and_trains_as_its_unpacked_runs(cifar, tmp_path):
    mixed = [cfg_for(cifar, "init=fixup", "seed=0"), cfg_for(cifar, "init=kaiming_normal")]
    with pytest.raises(UserError, match="init fixup adds its own scalars"):
        check_pack(mixed)
    cfgs = [cfg_for(cifar, "init=fixup", f"seed={s}") for s in (0, 1)]
    make = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    dirs = [tmp_path / "pack" / c["run_name"] for c in cfgs]
    summaries = run_pack(cfgs, dirs, make)
    for cfg, summary in zip(cfgs, summaries, strict=True):
        alone = run(cfg, tmp_path / "alone" / cfg["run_name"], make)
        assert summary["pack"]["members"] == 2
        for key, value in alone["final"].items():
            assert summary["final"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_the_sweep_runner_packs_each_structure_apart(tmp_path):
    from initbench.sweep import load_sweep

    sweep = load_sweep("sweeps/residual.yaml")
    combos = [
        Combination(i, {"model": "resnet20", "init": init, "seed": seed}, f"c{i}")
        for i, (init, seed) in enumerate(
            [(i, s) for i in ("fixup", "skipinit", "kaiming_normal", "xavier_uniform")
             for s in (0, 1)])
    ]  # fmt: skip
    jobs = pack_jobs(sweep, combos, tmp_path)
    members = sorted(tuple(sorted(c.params["init"] for c in job.combos)) for job in jobs)
    assert members == [
        ("fixup", "fixup"), ("kaiming_normal", "kaiming_normal", "xavier_uniform",
                             "xavier_uniform"), ("skipinit", "skipinit"),
    ]  # fmt: skip
    assert len({job.name for job in jobs}) == len(jobs)


def test_fixup_scalars_train_at_their_own_learning_rate(cifar, tmp_path):
    """The authors' recipe: the scalar biases and multipliers at a tenth of the learning rate,
    one optimizer group of their own, in the run and in its checkpoint."""
    from initbench.engine import optimizer_for, optimizer_params
    from initbench.models.residual import lr_scales

    model = initialized("fixup", depth=14, width=4)
    opt = optimizer_for(functools.partial(torch.optim.SGD, lr=0.1), model.parameters(),
                        lr_scales(model))  # fmt: skip
    assert [g["lr"] for g in opt.param_groups] == [0.1, pytest.approx(0.01)]
    scalars = {id(p) for m in model.modules() if isinstance(m, (Gate, ScalarBias))
               for p in m.parameters(recurse=False)}  # fmt: skip
    assert {id(p) for p in opt.param_groups[1]["params"]} == scalars
    assert len(optimizer_params(opt)) == len(list(model.parameters()))
    other = initialized("fixup", depth=14, width=4, scalar_lr=0.5)
    assert set(lr_scales(other)) == {1.0, 0.5}
    assert set(lr_scales(initialized("skipinit", depth=14, width=4))) == {1.0}
    summary = run(cfg_for(cifar, "init=fixup"), tmp_path / "run",
                  functools.partial(torch.optim.SGD, lr=0.01))  # fmt: skip
    assert summary["status"] == "finished"
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [0.01, pytest.approx(0.001)]


def test_a_stopped_fixup_run_resumes_with_its_scalars(cifar, tmp_path):
    """Resume rebuilds the model with the scheme's scalars, then loads the checkpoint into it:
    the scalars and their optimizer group come back as they were saved."""
    make = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    first = run(cfg_for(cifar, "init=fixup"), tmp_path / "run", make)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    scalars = {k: v for k, v in saved.items() if ".gate." in k or k.split(".")[-2].startswith(
        "bias_") or ".entry." in k}  # fmt: skip
    assert len(scalars) == 5 * 3 + 2
    moved = [k for k, v in scalars.items() if v.item() != (1.0 if k.endswith("scale") else 0.0)]
    assert first["epochs_completed"] == 1 and moved  # the scalars trained
    resumed = run(cfg_for(cifar, "init=fixup", "trainer.epochs=2"), tmp_path / "run", make)
    assert resumed["status"] == "finished" and resumed["epochs_completed"] == 2
    full = run(cfg_for(cifar, "init=fixup", "trainer.epochs=2"), tmp_path / "full", make)
    for key, value in full["final"].items():
        assert resumed["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
