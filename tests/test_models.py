import pytest
import torch
from torch import nn

from initbench.models import activation_gain, build_model, list_activations, make_activation
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
    }
