"""The init API for modern schemes: what a scheme sees (the layer's name and index, the model;
a data-dependent scheme's labelled batch, loss, device and logger), gradient steps inside a
scheme, and where what it logs ends up (summary.json, diagnose.json, the sinks)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from helpers import CPU_OVERRIDES, compose_dict
from initbench.inits import LAYER_TYPES, init_module, register, unregister
from initbench.run import run


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Net(nn.Module):
    """Layers in a nested container and at the top, so qualified names have dots."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.Tanh())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


X = torch.randn(64, 1, 6, 6, generator=gen(1))
Y = torch.randint(0, 3, (64,), generator=gen(2))
LR = 0.5


@pytest.fixture
def scheme():
    """Register a scheme for one test; it is gone afterwards (the registry mirrors conf/init)."""
    names = []

    def add(name, fn, **kwargs):
        register(name, **kwargs)(fn)
        names.append(name)
        return name

    yield add
    for name in names:
        unregister(name)


def test_every_layer_draw_sees_its_qualified_name_index_and_the_model(scheme) -> None:
    seen = []

    def by_position(weight, ctx):
        seen.append((ctx.name, ctx.index, ctx.num_layers, ctx.model))
        weight.fill_(ctx.index + 1)

    model = Net()
    init_module(model, scheme("by_position", by_position), generator=gen())
    layers = [name for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    assert layers == ["stem", "blocks.2", "head"]
    assert seen == [(name, i, 3, model) for i, name in enumerate(layers)]
    for i, name in enumerate(layers):
        assert torch.all(model.get_submodule(name).weight == i + 1)


def _sgd_step(model, layers, ctx, *, lr):
    """A test scheme: one SGD step of every layer on the labelled batch, logged."""
    before = ctx.loss()
    before.backward()
    with torch.no_grad():
        for _, layer in layers:
            assert layer.weight.device == ctx.device == ctx.inputs.device
            layer.weight -= lr * layer.weight.grad
    ctx.log(step=0, loss=float(before.detach()), device=str(ctx.device))
    ctx.log(step=1, loss=float(ctx.loss().detach()))


def _small_normal(weight, ctx, *, lr):
    nn.init.normal_(weight, 0.0, 0.3, generator=ctx.generator)


def test_a_data_dependent_scheme_takes_a_gradient_step_on_the_labelled_batch(scheme) -> None:
    name = scheme("sgd_step", _sgd_step, hparams={"lr": 0.1}, needs_data=True, base=_small_normal)
    model = Net()
    model.train()
    rows = init_module(model, name, data=(X, Y), generator=gen(), device="cpu", lr=LR)

    # The same by hand: the base draw per layer (weight, then zero bias), one SGD step.
    ref, g = Net(), gen()
    with torch.no_grad():
        for _, layer in ref.named_modules():
            if isinstance(layer, LAYER_TYPES):
                nn.init.normal_(layer.weight, 0.0, 0.3, generator=g)
                layer.bias.zero_()
    F.cross_entropy(ref(X), Y).backward()
    with torch.no_grad():
        for layer in ref.modules():
            if isinstance(layer, LAYER_TYPES):
                layer.weight -= LR * layer.weight.grad
    for (key, got), want in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=key)

    assert [r["step"] for r in rows] == [0, 1] and rows[0]["device"] == "cpu"
    assert rows[1]["loss"] < rows[0]["loss"]
    # Nothing left behind: no gradients, the flags and modes as they were.
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())


def test_a_scheme_that_needs_labels_says_so_and_leaves_the_model_as_it_was(scheme) -> None:
    name = scheme("sgd_step", _sgd_step, hparams={"lr": 0.1}, needs_data=True, base=_small_normal)
    model = Net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="needs a training batch with labels"):
        init_module(model, name, data=X, generator=gen())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_base_is_refused_on_a_closed_form_scheme() -> None:
    with pytest.raises(ValueError, match="only a data-dependent scheme"):
        register("not_data_dependent", base=_small_normal)(lambda weight, ctx: None)


def test_what_a_scheme_logs_reaches_summary_diagnose_and_the_sinks(tmp_path, scheme) -> None:
    scheme("sgd_step", _sgd_step, hparams={"lr": 0.1}, needs_data=True, base=_small_normal)
    cfg = compose_dict([*CPU_OVERRIDES, "trainer.epochs=1", "model.width=16"])
    cfg["init"] = {"name": "sgd_step", "lr": LR, "bias": "zeros"}
    summary = run(cfg, tmp_path / "run", make_optimizer=instantiate(cfg["optimizer"]))
    assert summary["status"] == "finished"
    rows = summary["init_report"]
    assert [r["step"] for r in rows] == [0, 1] and rows[1]["loss"] < rows[0]["loss"]
    report = json.loads((tmp_path / "run" / "diagnose.json").read_text())
    assert report["init"] == rows
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    text = acc.Tensors("init/log/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| step | loss | device |" in text and f"{rows[1]['loss']:.4g}"[:4] in text
