import time

import pytest
import torch
from torch import nn

from initbench.models import (
    activation_gain,
    build_model,
    list_activations,
    make_activation,
    model_size,
)
from initbench.models.cnn import stage_depths


@pytest.mark.parametrize("depth", [1, 2, 5, 30])
def test_mlp_output_shape_and_layers(depth):
    model = build_model(
        "mlp", input_shape=(1, 28, 28), num_classes=10, depth=depth, width=32, dropout=0.2
    )
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    linears = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    assert linears == [f"fc{i}" for i in range(1, depth + 1)] + ["head"]
    assert model.fc1.in_features == 784
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == depth


def test_mlp_explicit_widths_override_depth_and_width():
    model = build_model("mlp", input_shape=(2,), num_classes=2, depth=7, width=3, widths=[10, 5])
    assert [model.fc1.out_features, model.fc2.out_features, model.head.in_features] == [10, 5, 5]
    assert not hasattr(model, "fc3")


def test_mlp_without_bias():
    model = build_model("mlp", input_shape=(8,), num_classes=3, depth=2, width=4, bias=False)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("depth", [1, 2, 3, 10, 22, 30])
def test_cnn_output_shape_and_depth(depth):
    model = build_model("cnn", input_shape=(3, 32, 32), num_classes=10, depth=depth, channels=4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth
    assert all(c.kernel_size == (3, 3) for c in convs)
    # Three stages of 4, 8, 16 channels with stride 2 between them (for depth >= 3).
    assert sorted({c.out_channels for c in convs}) == [4, 8, 16][: min(3, depth)]
    assert sum(c.stride == (2, 2) for c in convs) == min(3, depth) - 1


def test_cnn30_stage_split_and_batch_norm():
    assert stage_depths(30) == [10, 10, 10]
    assert stage_depths(22) == [8, 7, 7]
    model = build_model(
        "cnn", input_shape=(1, 28, 28), num_classes=10, depth=4, channels=4, norm="batch"
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize(
    "arch, kwargs, field",
    [
        ("mlp", {"depth": 0}, "model.depth"),
        ("mlp", {"width": 0}, "model.width"),
        ("mlp", {"widths": []}, "model.widths"),
        ("mlp", {"widths": [4, 0]}, "model.widths"),
        ("mlp", {"dropout": 1.0}, "model.dropout"),
        ("mlp", {"dropout": -0.1}, "model.dropout"),
        ("cnn", {"depth": 0}, "model.depth"),
        ("cnn", {"channels": 0}, "model.channels"),
        ("cnn", {"norm": "layer"}, "model.norm"),
    ],
)
def test_bad_model_params_name_the_field(arch, kwargs, field):
    with pytest.raises(ValueError, match=field):
        build_model(arch, input_shape=(1, 28, 28), num_classes=10, **kwargs)


def test_cnn_rejects_vector_input_and_tiny_images():
    with pytest.raises(ValueError, match="image input"):
        build_model("cnn", input_shape=(2,), num_classes=2, depth=3)
    with pytest.raises(ValueError, match="too many for 2x2"):
        build_model("cnn", input_shape=(1, 2, 2), num_classes=2, depth=3)


def test_unknown_activation_lists_valid_ones():
    with pytest.raises(ValueError, match="valid activations: relu, leaky_relu"):
        make_activation("swish")


def test_activation_gains():
    assert activation_gain("relu") == pytest.approx(2**0.5)
    assert activation_gain("tanh") == pytest.approx(5 / 3)
    assert activation_gain(nn.LeakyReLU(0.2)) == pytest.approx((2 / (1 + 0.2**2)) ** 0.5)
    # Numerical gains restore a unit second moment: check by Monte Carlo.
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("gelu", "silu", "softsign"):
        f = make_activation(name)
        second_moment = (activation_gain(name) * f(z)).pow(2).mean()
        assert second_moment == pytest.approx(1.0, abs=5e-3), name
    assert set(list_activations()) == {
        "relu",
        "leaky_relu",
        "tanh",
        "sigmoid",
        "softsign",
        "selu",
        "gelu",
        "silu",
        "linear",
        "tat",
    }
    # TAT's gain is 1 by construction: its transform already restores a unit second moment
    assert activation_gain("tat") == 1.0
    tat = make_activation("tat", depth=30).double()
    assert float(tat(z).pow(2).mean()) == pytest.approx(1.0, abs=5e-3)


def measured_size(model: nn.Module, input_shape) -> tuple[int, int, int]:
    """Parameters, and per example the values a training forward pass produces (the input and
    every leaf module's output but Flatten's, a view) and the largest of those tensors."""
    sizes = [torch.Size(input_shape).numel()]
    hooks = [
        m.register_forward_hook(lambda m, i, out: sizes.append(out[0].numel()))
        for m in model.modules()
        if not list(m.children()) and not isinstance(m, nn.Flatten)
    ]
    model.train()
    model(torch.randn(2, *input_shape))
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for p in model.parameters()), sum(sizes), max(sizes)


@pytest.mark.parametrize(
    "arch, input_shape, classes, params",
    [
        ("mlp", (1, 28, 28), 10, {"depth": 2, "width": 256, "dropout": 0.2}),
        ("mlp", (2,), 2, {"widths": [10, 5], "bias": False}),
        ("mlp", (7,), 3, {"depth": 1, "width": 1}),
        ("mlp", (512,), 10, {"depth": 12, "width": 64, "widths": None}),
        ("cnn", (3, 32, 32), 10, {"depth": 30, "channels": 16}),
        ("cnn", (3, 32, 32), 10, {"depth": 22, "channels": 4, "norm": "batch"}),
        ("cnn", (1, 28, 28), 10, {"depth": 5, "channels": 3, "norm": "batch", "bias": False}),
        ("cnn", (3, 5, 7), 4, {"depth": 2, "channels": 2}),  # odd sizes: stride-2 rounding
        ("cnn", (3, 9, 9), 4, {"depth": 1, "channels": 2}),
    ],
)
def test_model_size_is_exact_without_building(arch, input_shape, classes, params):
    model = build_model(arch, input_shape=input_shape, num_classes=classes, **params)
    size = model_size(arch, input_shape=input_shape, num_classes=classes, **params)
    assert tuple(size) == measured_size(model, input_shape)


def test_model_size_of_a_huge_model_is_instant_and_exact():
    start = time.perf_counter()
    size = model_size("mlp", input_shape=(1, 28, 28), num_classes=10, depth=3, width=10**9)
    assert size.params == 784 * 10**9 + 10**9 + 2 * (10**18 + 10**9) + 10**10 + 10
    assert size.widest == 10**9
    wide = model_size("cnn", input_shape=(3, 32, 32), num_classes=10, depth=3, channels=2**14)
    c = 2**14
    assert wide.params == 3 * c * 9 + c + c * 2 * c * 9 + 2 * c + 2 * c * 4 * c * 9 + 4 * c + (
        4 * c * 10 + 10
    )
    assert wide.widest == c * 32 * 32
    assert time.perf_counter() - start < 30  # nothing is allocated


def test_a_model_of_absurd_depth_is_refused_at_once_naming_what_to_reduce():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"more than 20000 modules.*reduce model\.depth"):
        model_size("mlp", input_shape=(1, 28, 28), num_classes=10, depth=10**8)
    assert time.perf_counter() - start < 30


class Branchy(nn.Module):
    """A user's network: other layer names, a functional activation, and a forward pass whose
    control flow depends on the data (which the meta device cannot run)."""

    def __init__(self, input_shape, num_classes, hidden: int = 6):
        super().__init__()
        self.proj = nn.Linear(input_shape[0], hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        h = torch.relu(self.proj(x))
        return self.out(h if float(h.detach().sum()) >= 0 else -h)


def test_model_size_of_a_users_model():
    size = model_size(Branchy, input_shape=(5,), num_classes=3, hidden=7)
    # data-dependent control flow: parameters exact, activations the input's only
    assert tuple(size) == (5 * 7 + 7 + 7 * 3 + 3, 5, 5)
    model = build_model(Branchy, input_shape=(5,), num_classes=3, hidden=7)
    assert size.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "arch, input_shape, params, message",
    [
        ("cnn", (2,), {"depth": 3}, "needs image input"),
        ("cnn", (3, 2, 2), {"depth": 3}, "too many"),
        ("mlp", (2,), {"depth": 0}, "model.depth must be an integer >= 1"),
        ("mlp", (2,), {"widths": [4, 0]}, "model.widths must be a non-empty list of integers >= 1"),
    ],
)
def test_model_size_refuses_what_build_model_refuses(arch, input_shape, params, message):
    for build in (build_model, model_size):
        with pytest.raises(ValueError, match=message):
            build(arch, input_shape=input_shape, num_classes=2, **params)
