"""Tests of the initializer library: the statistics each scheme's formula promises.

Every test that should hold for all schemes is parametrized over ``list_inits()``; a new scheme
fails ``test_every_scheme_has_expected_statistics`` until its formula is added to ``EXPECTED``.
Layers are large (800k and 295k weights) so sample moments sit well within 1% of the formula,
and every draw is seeded, so nothing flakes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from helpers import compose_dict
from initbench.inits import (
    check_init_params,
    get_init,
    init_module,
    list_aliases,
    list_inits,
    register,
    resolve,
)
from initbench.inits.variance import variance_scaling_
from initbench.models import ResidualBlock
from initbench.models.activations import activation_gain

torch.set_num_threads(2)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "init"
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of N(0, 1) cut at +-2 (TF/Keras)
SQRT2 = math.sqrt(2.0)
DETERMINISTIC = {"zeros", "ones", "constant", "zero_init"}  # schemes that draw nothing
# Learned schemes (a start draw, then scales tuned by gradient steps): a few steps in the tests
# that loop over every scheme (tests/test_modern_inits.py checks what the steps do).
# GradInit also scales the biases: lr 1e-9 leaves them as the bias policy drew them.
QUICK = {"metainit": {"steps": 3}, "gradinit": {"steps": 3, "lr": 1e-9}}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def big_linear() -> nn.Linear:
    return nn.Linear(800, 1000)  # fan_in 800, fan_out 1000


def big_conv() -> nn.Conv2d:
    return nn.Conv2d(128, 256, 3)  # fan_in 128*9 = 1152, fan_out 256*9 = 2304 (c_in <= c_out)


def batch_for(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A labelled batch for ``layer`` (as a classifier: see ``classifier``)."""
    shape = (512, 800) if isinstance(layer, nn.Linear) else (16, 128, 8, 8)
    classes = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return torch.randn(*shape, generator=gen(1)), torch.randint(
        classes, shape[:1], generator=gen(4)
    )


def classifier(layer: nn.Module) -> nn.Module:
    """``layer`` with logits a loss can take: a conv's outputs pooled (its weights unchanged)."""
    if isinstance(layer, nn.Linear):
        return layer
    return nn.Sequential(layer, nn.AdaptiveAvgPool2d(1), nn.Flatten())


BIG_LAYERS = {"linear": big_linear, "conv": big_conv}
# Schemes made for residual networks: they act on ResidualBlocks and refuse a model without any.
RESIDUAL = {name for name in list_inits() if get_init(name).structure is not None}


def host(module: nn.Module, name: str) -> nn.Module:
    """``module`` itself; for a residual scheme, ``module`` as the first layers of one residual
    branch, whose last layer is a Linear after it (only the structure matters: the registry-wide
    tests draw weights and never run it)."""
    if name not in RESIDUAL:
        return module
    return nn.Sequential(ResidualBlock(nn.Sequential(module, nn.Linear(1, 1))))


def fans(layer: nn.Module) -> tuple[int, int]:
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    k = math.prod(layer.kernel_size)
    return layer.in_channels * k, layer.out_channels * k


class Tiny(nn.Module):
    """Every layer type init_module handles (Conv1d/2d/3d, Linear), plus a BatchNorm to leave be."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3)
        self.c2 = nn.Conv2d(2, 4, 3)
        self.c3 = nn.Conv3d(2, 4, 3)
        self.bn = nn.BatchNorm1d(12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, 2, 5, 5, 5)
        a = self.c1(x.mean((3, 4))).mean(2)
        b = self.c2(x.mean(4)).mean((2, 3))
        c = self.c3(x).mean((2, 3, 4))
        return self.fc(self.bn(torch.cat([a, b, c], 1)))


TINY_BATCH = torch.randn(32, 2, 5, 5, 5, generator=gen(2))
TINY_DATA = (TINY_BATCH, torch.randint(5, (32,), generator=gen(3)))  # Tiny has 5 outputs
TARGET_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- distribution checks ----------------------------------------------------------------------


def assert_uniform(w: torch.Tensor, lo: float, hi: float, tol: float = 0.01) -> None:
    w = w.detach().double()
    span = hi - lo
    assert w.min() >= lo - 1e-6 * span and w.max() <= hi + 1e-6 * span, "outside the bounds"
    assert w.min() < lo + tol * span and w.max() > hi - tol * span, "does not fill the bounds"
    assert abs(float(w.mean()) - (lo + hi) / 2) < tol * span
    assert float(w.std()) == pytest.approx(span / math.sqrt(12), rel=tol)


def assert_normal(w: torch.Tensor, mean: float, std: float) -> None:
    w = w.detach().double()
    assert abs(float(w.mean()) - mean) < 0.01 * std
    assert float(w.std()) == pytest.approx(std, rel=0.01)
    # Normal tails: a truncated normal stops at 2.27 std and a uniform at 1.73 std.
    assert float((w - mean).abs().max()) > 4 * std


def assert_truncated_normal(w: torch.Tensor, std: float) -> None:
    """Var(W) = std^2 after truncation at +-2 of the corrected std (std / 0.8796)."""
    w = w.detach().double()
    bound = 2 * std / TRUNCATED_NORMAL_STD
    assert 0.99 * bound < float(w.abs().max()) <= bound * (1 + 1e-6)
    assert abs(float(w.mean())) < 0.01 * std
    assert float(w.std()) == pytest.approx(std, rel=0.01)


def assert_constant(w: torch.Tensor, value: float) -> None:
    assert torch.all(w == value)


def assert_orthogonal(w: torch.Tensor, gain: float) -> None:
    """W W^T = gain^2 I for rows <= cols (W^T W otherwise), a conv kernel as (c_out, c_in*k*k)."""
    m = w.detach().reshape(w.shape[0], -1).double()
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    torch.testing.assert_close(gram, gain**2 * eye, atol=1e-4, rtol=0)


def assert_delta_orthogonal(w: torch.Tensor, gain: float) -> None:
    if w.dim() == 2:
        assert_orthogonal(w, gain)
        return
    centre = (slice(None), slice(None), *(k // 2 for k in w.shape[2:]))
    off_centre = torch.ones(w.shape, dtype=torch.bool)
    off_centre[centre] = False
    assert torch.all(w[off_centre] == 0)
    tap = w[centre].double()  # c_out x c_in with orthonormal columns
    eye = torch.eye(w.shape[1], dtype=torch.float64)
    torch.testing.assert_close(tap.T @ tap, gain**2 * eye, atol=1e-4, rtol=0)


def assert_unit_output_variance(layer: nn.Module, x: torch.Tensor, tol: float) -> None:
    with torch.no_grad():
        assert abs(float(layer(x).var()) - 1.0) < tol


def assert_zero_init(w: torch.Tensor) -> None:
    """ZerO on out > in (both big layers are tall): the centre tap (a conv's) is
    2^(-m/2) H[:out, :in], H scipy's Hadamard matrix of size 2^m >= out; nothing else is set."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    centre = (slice(None), slice(None), *(k // 2 for k in w.shape[2:]))
    tap = w.detach()[centre].double()
    m = math.ceil(math.log2(tap.shape[0]))
    h = torch.as_tensor(scipy_linalg.hadamard(2**m), dtype=torch.float64)
    assert torch.equal(tap * 2 ** (m / 2), h[: tap.shape[0], : tap.shape[1]])
    assert int((w != 0).sum()) == tap.numel()


def assert_rescaled_start(layer: nn.Module) -> None:
    """A learned scheme's weight is its start's draw (kaiming_normal, same generator) times a
    positive scalar."""
    start = copy.deepcopy(layer)
    init_module(start, "kaiming_normal", activation="relu", generator=gen())
    ratio = (layer.weight / start.weight).detach().double()
    assert float(ratio.mean()) > 0 and float(ratio.std()) < 1e-5 * float(ratio.mean())


def uniform_bound(fan: float, scale: float = 1.0) -> tuple[float, float]:
    limit = math.sqrt(3 * scale / fan)
    return -limit, limit


# What each scheme promises with its default hparams and activation="relu".
Check = Callable[[nn.Module, int, int, torch.Tensor], None]
EXPECTED: dict[str, Check] = {
    "zeros": lambda layer, fi, fo, x: assert_constant(layer.weight, 0.0),
    "ones": lambda layer, fi, fo, x: assert_constant(layer.weight, 1.0),
    "constant": lambda layer, fi, fo, x: assert_constant(layer.weight, 0.1),
    "uniform": lambda layer, fi, fo, x: assert_uniform(layer.weight, 0.0, 1.0),
    "normal": lambda layer, fi, fo, x: assert_normal(layer.weight, 0.0, 0.01),
    "lecun_uniform": lambda layer, fi, fo, x: assert_uniform(layer.weight, *uniform_bound(fi)),
    "lecun_normal": lambda layer, fi, fo, x: assert_normal(layer.weight, 0.0, 1 / math.sqrt(fi)),
    "xavier_uniform": lambda layer, fi, fo, x: assert_uniform(
        layer.weight, -math.sqrt(6 / (fi + fo)), math.sqrt(6 / (fi + fo))
    ),
    "xavier_normal": lambda layer, fi, fo, x: assert_normal(
        layer.weight, 0.0, math.sqrt(2 / (fi + fo))
    ),
    "kaiming_uniform": lambda layer, fi, fo, x: assert_uniform(
        layer.weight, *uniform_bound(fi, scale=2.0)
    ),
    "kaiming_normal": lambda layer, fi, fo, x: assert_normal(layer.weight, 0.0, SQRT2 / fi**0.5),
    "variance_scaling": lambda layer, fi, fo, x: assert_truncated_normal(layer.weight, fi**-0.5),
    "orthogonal": lambda layer, fi, fo, x: assert_orthogonal(layer.weight, 1.0),
    "delta_orthogonal": lambda layer, fi, fo, x: assert_delta_orthogonal(layer.weight, 1.0),
    "lsuv": lambda layer, fi, fo, x: assert_unit_output_variance(layer, x, tol=0.1),
    "pytorch_default": lambda layer, fi, fo, x: assert_uniform(
        layer.weight, -1 / math.sqrt(fi), 1 / math.sqrt(fi)
    ),
    "keras_default": lambda layer, fi, fo, x: assert_uniform(
        layer.weight, -math.sqrt(6 / (fi + fo)), math.sqrt(6 / (fi + fo))
    ),
    "mean_field": lambda layer, fi, fo, x: assert_normal(layer.weight, 0.0, math.sqrt(1.76 / fi)),
    "scaled_orthogonal": lambda layer, fi, fo, x: assert_delta_orthogonal(
        layer.weight, max(1.0, math.sqrt(layer.weight.shape[0] / layer.weight.shape[1]))
    ),
    "zero_init": lambda layer, fi, fo, x: assert_zero_init(layer.weight),
    # residual schemes: ``layer`` is the first of a branch of m = 2 layers in a net of L = 1
    "fixup": lambda layer, fi, fo, x: assert_normal(layer.weight, 0.0, SQRT2 / fo**0.5),
    "skipinit": lambda layer, fi, fo, x: assert_normal(layer.weight, 0.0, SQRT2 / fi**0.5),
    "rezero": lambda layer, fi, fo, x: assert_normal(layer.weight, 0.0, SQRT2 / fi**0.5),
    "metainit": lambda layer, fi, fo, x: assert_rescaled_start(layer),
    "gradinit": lambda layer, fi, fo, x: assert_rescaled_start(layer),
}
# Schemes whose default bias is their own draw, not zeros: its std by default hparams.
DRAWN_BIAS_STD = {"mean_field": math.sqrt(0.05)}


# ---- registry ---------------------------------------------------------------------------------


def test_every_scheme_has_expected_statistics() -> None:
    assert set(EXPECTED) == set(list_inits())


def test_aliases_resolve_to_the_spec_schemes() -> None:
    assert list_aliases() == {
        "kaiming": "kaiming_normal",
        "he_normal": "kaiming_normal",
        "he_uniform": "kaiming_uniform",
        "xavier": "xavier_uniform",
        "glorot_normal": "xavier_normal",
        "glorot_uniform": "xavier_uniform",
        "lecun": "lecun_normal",
        "tat": "scaled_orthogonal",
    }
    assert not set(list_aliases()) & set(list_inits())
    assert resolve("he_uniform") == "kaiming_uniform"
    assert resolve("xavier_normal") == "xavier_normal"
    assert get_init("glorot_normal").name == "xavier_normal"


@pytest.mark.parametrize("alias", sorted(list_aliases()))
def test_alias_gives_the_canonical_weights(alias: str) -> None:
    a, b = Tiny(), Tiny()
    init_module(a, alias, generator=gen(5))
    init_module(b, list_aliases()[alias], generator=gen(5))
    assert_same(snapshot(a), snapshot(b))


@pytest.mark.parametrize("name", list_inits())
def test_docstring_states_formula_and_defaults(name: str) -> None:
    scheme = get_init(name)
    doc = scheme.fn.__doc__ or ""
    assert "Default" in doc or "No hparams" in doc or "No defaults" in doc
    for hparam in scheme.hparams:
        if hparam != "bias":
            assert hparam in doc, f"{name}'s docstring does not mention {hparam}"


def test_register_refuses_duplicates_and_hparams_the_function_lacks() -> None:
    def scheme(weight: torch.Tensor, ctx: object, *, gain: float) -> None: ...

    with pytest.raises(ValueError, match="already registered"):
        register("xavier", hparams={"gain": 1.0})(scheme)
    with pytest.raises(ValueError, match="must match the keyword-only parameters"):
        register("test_only_scheme", hparams={"std": 1.0})(scheme)
    assert "test_only_scheme" not in list_inits()


# ---- statistics of every scheme ---------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BIG_LAYERS))
@pytest.mark.parametrize("name", list_inits())
def test_weight_statistics(name: str, kind: str) -> None:
    layer = BIG_LAYERS[kind]()
    x, y = batch_for(layer)
    init_module(host(classifier(layer), name), name, activation="relu", data=(x, y),
                generator=gen(), **QUICK.get(name, {}))  # fmt: skip
    EXPECTED[name](layer, *fans(layer), x)


@pytest.mark.parametrize("name", list_inits())
def test_bias_policy(name: str) -> None:
    layer = big_linear()
    x, quick = batch_for(layer), QUICK.get(name, {})
    bound = 1 / math.sqrt(800)
    init_module(host(layer, name), name, data=x, generator=gen(), **quick)
    if name == "pytorch_default":  # torch's own bias, the one exception
        assert_uniform(layer.bias, -bound, bound, tol=0.06)
    elif name in DRAWN_BIAS_STD:  # the scheme's own draw (1000 biases: 2.2% standard error)
        assert float(layer.bias.detach().std()) == pytest.approx(DRAWN_BIAS_STD[name], rel=0.07)
    else:
        assert_constant(layer.bias, 0.0)

    init_module(host(layer, name), name, data=x, generator=gen(), bias="default", **quick)
    assert_uniform(layer.bias, -bound, bound, tol=0.06)
    init_module(host(layer, name), name, data=x, generator=gen(), bias=0.5, **quick)
    assert_constant(layer.bias, 0.5)
    init_module(host(layer, name), name, data=x, generator=gen(), bias="zeros", **quick)
    assert_constant(layer.bias, 0.0)


@pytest.mark.parametrize("name", list_inits())
def test_same_generator_same_weights(name: str) -> None:
    """All draws go through the generator: the global seed makes no difference."""
    models = [Tiny() for _ in range(3)]
    torch.manual_seed(1)
    for model, global_seed, seed in zip(models, (1, 2, 2), (7, 7, 8), strict=True):
        torch.manual_seed(global_seed)
        init_module(host(model, name), name, data=TINY_DATA, generator=gen(seed),
                    **QUICK.get(name, {}))  # fmt: skip
    assert_same(snapshot(models[0]), snapshot(models[1]))
    if name not in DETERMINISTIC:
        assert not torch.equal(models[0].fc.weight, models[2].fc.weight)


@pytest.mark.parametrize("name", list_inits())
def test_every_linear_and_conv_is_initialized_and_nothing_else(name: str) -> None:
    model = Tiny()
    bn_before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    init_module(host(model, name), name, data=TINY_DATA, generator=gen(), bias=0.25,
                **QUICK.get(name, {}))  # fmt: skip
    for layer in (model.c1, model.c2, model.c3, model.fc):
        assert_constant(layer.bias, 0.25)
    if name == "zeros":
        for layer in (model.c1, model.c2, model.c3, model.fc):
            assert_constant(layer.weight, 0.0)
    assert_same(bn_before, {k: v for k, v in model.bn.state_dict().items()})


# ---- fans, gains, modes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform"])
def test_kaiming_mode_picks_the_fan(name: str, mode: str) -> None:
    layer = big_conv()
    init_module(layer, name, mode=mode, generator=gen())
    fan = dict(zip(("fan_in", "fan_out"), fans(layer), strict=True))[mode]
    assert fan == {"fan_in": 128 * 9, "fan_out": 256 * 9}[mode]  # torch's conv fans
    std = SQRT2 / math.sqrt(fan)
    if name == "kaiming_normal":
        assert_normal(layer.weight, 0.0, std)
    else:
        assert_uniform(layer.weight, -math.sqrt(3) * std, math.sqrt(3) * std)


@pytest.mark.parametrize(
    ("activation", "gain"),
    [
        (nn.LeakyReLU(0.2), math.sqrt(2 / (1 + 0.2**2))),
        ("leaky_relu", math.sqrt(2 / (1 + 0.01**2))),
        ("tanh", 5 / 3),
        ("linear", 1.0),
        ("selu", 3 / 4),
        ("gelu", activation_gain("gelu")),  # torch defines none: numerical gain
    ],
)
def test_kaiming_gain_follows_the_activation(activation: str | nn.Module, gain: float) -> None:
    layer = big_linear()
    init_module(layer, "kaiming_normal", activation=activation, generator=gen())
    assert_normal(layer.weight, 0.0, gain / math.sqrt(800))


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal"])
@pytest.mark.parametrize(("gain", "value"), [(1.0, 1.0), (2.0, 2.0), ("auto", 5 / 3)])
def test_xavier_gain(name: str, gain: float | str, value: float) -> None:
    layer = big_linear()
    init_module(layer, name, activation="tanh", gain=gain, generator=gen())
    std = value * math.sqrt(2 / (800 + 1000))
    if name == "xavier_normal":
        assert_normal(layer.weight, 0.0, std)
    else:
        assert_uniform(layer.weight, -math.sqrt(3) * std, math.sqrt(3) * std)


@pytest.mark.parametrize("distribution", ["normal", "truncated_normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_variance_scaling(mode: str, distribution: str) -> None:
    layer = big_conv()
    init_module(
        layer, "variance_scaling", scale=2.0, mode=mode, distribution=distribution, generator=gen()
    )
    fan_in, fan_out = fans(layer)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(2.0 / n)
    if distribution == "normal":
        assert_normal(layer.weight, 0.0, std)
    elif distribution == "truncated_normal":
        assert_truncated_normal(layer.weight, std)
    else:
        assert_uniform(layer.weight, -math.sqrt(3) * std, math.sqrt(3) * std)


def test_lecun_normal_truncated() -> None:
    layer = big_linear()
    init_module(layer, "lecun_normal", truncated=True, generator=gen())
    assert_truncated_normal(layer.weight, 1 / math.sqrt(800))


# ---- mean field -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BIG_LAYERS))
@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(1.0, 0.05), (4.0, 0.3), (2.0, 0.0)])
def test_mean_field_draws_weights_and_biases_with_the_theory_variances(
    kind: str, sigma_w2: float, sigma_b2: float
) -> None:
    layer = BIG_LAYERS[kind]()
    init_module(layer, "mean_field", sigma_w2=sigma_w2, sigma_b2=sigma_b2, generator=gen())
    fan_in, _ = fans(layer)
    assert_normal(layer.weight, 0.0, math.sqrt(sigma_w2 / fan_in))  # fan_in = c_in k k for convs
    # biases: a layer with 200,000 of them: the sample std within 1% (0.16% std error), and
    # enough draws for the normal tail beyond 4 std that assert_normal looks for
    wide = nn.Linear(1, 200_000)
    init_module(wide, "mean_field", sigma_w2=sigma_w2, sigma_b2=sigma_b2, generator=gen())
    if sigma_b2 == 0:
        assert_constant(wide.bias, 0.0)
    else:
        assert_normal(wide.bias, 0.0, math.sqrt(sigma_b2))


def test_bias_normal_is_refused_by_schemes_without_their_own_draw() -> None:
    with pytest.raises(ValueError, match="bias must be zeros, default"):
        init_module(Tiny(), "xavier_uniform", bias="normal")


# ---- framework defaults -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BIG_LAYERS))
def test_pytorch_default_is_what_torch_layers_do(kind: str) -> None:
    fresh, ours = BIG_LAYERS[kind](), BIG_LAYERS[kind]()
    init_module(ours, "pytorch_default", generator=gen())
    bound = 1 / math.sqrt(fans(fresh)[0])
    for layer in (fresh, ours):
        assert_uniform(layer.weight, -bound, bound)
        assert_uniform(layer.bias, -bound, bound, tol=0.08)
    assert float(ours.weight.detach().std()) == pytest.approx(
        float(fresh.weight.detach().std()), rel=0.01
    )
    # Same seed for torch's global RNG and for our generator: the very same tensors.
    torch.manual_seed(11)
    fresh = BIG_LAYERS[kind]()
    init_module(ours, "pytorch_default", generator=gen(11))
    assert torch.equal(ours.weight, fresh.weight) and torch.equal(ours.bias, fresh.bias)


def test_keras_default_is_glorot_uniform_with_zero_bias() -> None:
    keras, glorot = Tiny(), Tiny()
    init_module(keras, "keras_default", generator=gen(3))
    init_module(glorot, "glorot_uniform", generator=gen(3))
    for a, b in zip(keras.modules(), glorot.modules(), strict=True):
        if isinstance(a, TARGET_TYPES):
            assert torch.equal(a.weight, b.weight)
            assert_constant(a.bias, 0.0)


# ---- orthogonal family ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer", [nn.Linear(300, 100), nn.Conv2d(16, 32, 3)], ids=["linear", "conv"]
)
@pytest.mark.parametrize(("gain", "value"), [(1.0, 1.0), (2.0, 2.0), ("auto", SQRT2)])
def test_orthogonal_rows_are_orthonormal(layer: nn.Module, gain: float | str, value: float) -> None:
    assert layer.weight.shape[0] <= layer.weight[0].numel()  # rows <= cols
    init_module(layer, "orthogonal", activation="relu", gain=gain, generator=gen())
    m = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
    eye = torch.eye(m.shape[0], dtype=torch.float64)
    torch.testing.assert_close(m @ m.T, value**2 * eye, atol=1e-4, rtol=0)


def test_delta_orthogonal_keeps_a_deep_linear_conv_stack_norm_preserving() -> None:
    stack = nn.Sequential(*[nn.Conv2d(16, 16, 3, padding=1) for _ in range(20)])
    x = torch.randn(4, 16, 8, 8, generator=gen(1))

    def norm_ratio() -> torch.Tensor:
        with torch.no_grad():
            return stack(x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)

    init_module(stack, "delta_orthogonal", activation="linear", generator=gen())
    torch.testing.assert_close(norm_ratio(), torch.ones(4), atol=1e-3, rtol=0)
    init_module(stack, "orthogonal", activation="linear", generator=gen())  # spatial mixing
    assert torch.all((norm_ratio() - 1).abs() > 0.1)


# ---- LSUV -------------------------------------------------------------------------------------


def small_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


@pytest.mark.parametrize(
    ("build", "shape"), [(small_mlp, (256, 32)), (small_cnn, (64, 3, 8, 8))], ids=["mlp", "cnn"]
)
def test_lsuv_gives_unit_output_variance_per_layer(build, shape) -> None:
    model = build()
    x = 3.0 * torch.randn(*shape, generator=gen(1))  # far from unit variance to begin with
    records = init_module(model, "lsuv", activation="relu", data=x, generator=gen())

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, TARGET_TYPES)]
    outputs: dict[str, torch.Tensor] = {}
    for name, layer in layers:
        layer.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
    with torch.no_grad():
        model(x)
    for name, _ in layers:
        assert abs(float(outputs[name].var()) - 1.0) < 0.1, name

    assert [r["layer"] for r in records] == [n for n, _ in layers]
    for r in records:
        assert abs(r["final_var"] - 1.0) < 0.1
        assert r["final_var"] == pytest.approx(float(outputs[r["layer"]].var()), rel=1e-4)
        # A layer's output is linear in its weights: one rescale lands on variance 1.
        assert r["iterations"] in (0, 1)
    assert any(r["iterations"] > 0 for r in records)
    assert model.training  # eval mode only while measuring


def test_lsuv_takes_an_input_target_pair_and_the_max_iters_cap() -> None:
    x = 3.0 * torch.randn(256, 32, generator=gen(1))
    a, b = small_mlp(), small_mlp()
    ra = init_module(a, "lsuv", data=x, generator=gen())
    rb = init_module(b, "lsuv", data=(x, torch.zeros(256)), generator=gen())
    assert ra == rb
    assert_same(snapshot(a), snapshot(b))
    capped = init_module(small_mlp(), "lsuv", data=x, generator=gen(), tol=1e-12, max_iters=1)
    assert all(r["iterations"] == 1 for r in capped)


# ---- bad input: a clear ValueError before any weight changes ----------------------------------


def _delta_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 2, 3))  # 2nd layer: c_in > c_out


BAD_INPUTS = [
    ("he_normall", {}, "unknown init scheme 'he_normall'; valid schemes: .*kaiming_normal"),
    ("normal", {"sigma": 0.1}, r"unknown hparams \['sigma'\]; valid hparams: mean, std, bias"),
    ("lsuv", {"data": None}, "data-dependent"),
    ("normal", {"std": -0.1}, "std must be a finite number >= 0"),
    ("normal", {"std": "big"}, "std must be a finite number"),
    ("uniform", {"a": 1.0, "b": 0.0}, "a must be <= b"),
    # the message names the field that is wrong
    ("uniform", {"a": "low"}, "': a must be a finite number"),
    ("uniform", {"b": float("nan")}, "': b must be a finite number"),
    ("normal", {"mean": float("inf")}, "': mean must be a finite number"),
    ("kaiming_normal", {"mode": "fan_avg"}, "mode must be one of fan_in, fan_out"),
    ("variance_scaling", {"mode": "avg"}, "mode must be one of fan_in, fan_out, fan_avg"),
    ("variance_scaling", {"distribution": "gamma"}, "distribution must be one of normal, trunc"),
    ("variance_scaling", {"scale": 0.0}, "scale must be a finite number > 0"),
    ("lsuv", {"tol": 0.0}, "tol must be a finite number > 0"),
    ("lsuv", {"max_iters": 0}, "max_iters must be an integer >= 1"),
    ("lsuv", {"max_iters": 2.5}, "max_iters must be an integer >= 1"),
    ("xavier_uniform", {"gain": -1.0}, 'gain must be a number > 0 or "auto"'),
    ("orthogonal", {"gain": "relu"}, 'gain must be a number > 0 or "auto"'),
    ("lecun_normal", {"truncated": "yes"}, "truncated must be true or false"),
    ("constant", {"value": None}, "value must be a finite number"),
    ("xavier", {"bias": "random"}, "bias must be zeros, default"),
    ("mean_field", {"sigma_w2": 0.0}, r"sigma_w2 must be a finite number > 0 \(got 0.0\)"),
    ("mean_field", {"sigma_b2": -1.0}, r"sigma_b2 must be a finite number >= 0 \(got -1.0\)"),
    ("kaiming", {"activation": "relu6"}, "unknown activation 'relu6'"),
]


@pytest.mark.parametrize(("scheme", "kwargs", "match"), BAD_INPUTS)
def test_bad_input_raises_before_any_change(scheme: str, kwargs: dict, match: str) -> None:
    model = Tiny()
    before = snapshot(model)
    kwargs = {"data": TINY_DATA, **kwargs}
    with pytest.raises(ValueError, match=match):
        init_module(model, scheme, generator=gen(), **kwargs)
    assert_same(before, snapshot(model))


def test_uniform_with_a_equal_to_b_is_the_constant() -> None:
    model = nn.Linear(3, 4)
    init_module(model, "uniform", a=0.5, b=0.5, generator=gen())
    assert torch.equal(model.weight, torch.full((4, 3), 0.5))


def test_variance_scaling_of_a_fan_of_one_is_scale() -> None:
    """A layer with one input (fan_in = 1): Var(W) = scale / 1 (n is floored at 1, no more)."""
    weight = torch.empty(20000, 1)
    variance_scaling_(weight, scale=2.0, mode="fan_in", distribution="normal", generator=gen())
    std = weight.std().item()
    assert abs(std - math.sqrt(2.0)) < 0.05  # n floored at 2 instead: std 1.0


@pytest.mark.parametrize("name", list_inits())
def test_unknown_hparam_is_refused_by_every_scheme(name: str) -> None:
    model = Tiny()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"unknown hparams \['bogus'\]; valid hparams: .*bias"):
        init_module(model, name, data=TINY_DATA, bogus=1)
    assert_same(before, snapshot(model))


def test_delta_orthogonal_refuses_c_in_above_c_out_before_any_change() -> None:
    model = _delta_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match="layer '1'.*c_in <= c_out.*c_in=4, c_out=2"):
        init_module(model, "delta_orthogonal", generator=gen())
    assert_same(before, snapshot(model))


def test_lsuv_failing_on_its_batch_leaves_the_model_unchanged() -> None:
    model = small_mlp()
    before = snapshot(model)
    with pytest.raises(RuntimeError):  # the batch has the wrong width for the model
        init_module(model, "lsuv", data=torch.randn(8, 31), generator=gen())
    assert_same(before, snapshot(model))


def test_a_module_without_layers_is_refused() -> None:
    with pytest.raises(ValueError, match="no Linear or Conv layers"):
        init_module(nn.Sequential(nn.ReLU()), "xavier_uniform")


# ---- the Hydra group mirrors the registry -----------------------------------------------------

YAML_FILES = sorted(CONF_DIR.glob("*.yaml"))
NAMED = sorted(set(list_inits()) | set(list_aliases()))  # one file each, named as registered
VARIANTS = sorted({p.stem for p in YAML_FILES} - set(NAMED))  # files that pin a scheme's hparams


def composed_init(*overrides: str) -> dict:
    """The init node as train.py gets it (Hydra follows a file's defaults list)."""
    return compose_dict(list(overrides))["init"]


def test_yaml_files_name_every_scheme_and_alias() -> None:
    assert set(NAMED) <= {p.stem for p in YAML_FILES}
    assert {"normal_std10", "normal_std1", "normal_std001"} <= set(VARIANTS)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.stem)
def test_every_yaml_field_has_a_comment(path: Path) -> None:
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert " # " in line, f"{path.name}: field without a comment: {line!r}"


@pytest.mark.parametrize("name", NAMED)
def test_yaml_file_is_a_valid_call(name: str) -> None:
    hp = composed_init(f"init={name}")
    assert hp.pop("name") == name
    assert hp == dict(get_init(name).hparams)  # every hparam, at its registered default
    # What the training entry point does with it.
    model = Tiny()
    before = snapshot(model)
    init_module(host(model, name), name, activation=nn.ReLU(), data=TINY_DATA, generator=gen(),
                **hp)  # fmt: skip
    assert not torch.equal(before["fc.weight"], model.fc.weight)


@pytest.mark.parametrize("alias, canonical", sorted(list_aliases().items()))
def test_alias_file_inherits_its_canonical_file(alias: str, canonical: str) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{alias}.yaml"))
    assert raw == {"defaults": [canonical], "name": alias}  # nothing restated, only the name
    hp, canonical_hp = composed_init(f"init={alias}"), composed_init(f"init={canonical}")
    assert (hp.pop("name"), canonical_hp.pop("name")) == (alias, canonical)
    assert hp == canonical_hp


def test_an_alias_field_can_still_be_overridden() -> None:
    hp = composed_init("init=kaiming", "init.mode=fan_out")
    assert hp == {"name": "kaiming", "mode": "fan_out", "bias": "zeros"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_inherits_its_scheme_and_pins_only_hparams(variant: str) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{variant}.yaml"))
    (base,) = raw.pop("defaults")
    assert base in NAMED, f"{variant}.yaml inherits {base!r}, not a scheme's file"
    assert raw and "name" not in raw  # it pins hparams and keeps its base's (registered) name
    hp = composed_init(f"init={variant}")
    name = hp.pop("name")
    assert name == base and resolve(name) in list_inits()
    assert set(hp) == set(get_init(name).hparams) and raw.items() <= hp.items()
    check_init_params(name, **hp)
    model = Tiny()
    init_module(model, name, activation=nn.ReLU(), data=TINY_DATA, generator=gen(), **hp)


def test_docs_inits_table_lists_every_scheme_and_alias():
    page = (Path(__file__).resolve().parents[1] / "docs" / "inits.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    for name in list_inits():
        assert any(line.startswith(f"| `{name}`") for line in rows), name
    for alias in list_aliases():
        assert any(f"`{alias}`" in line.split("|")[1] for line in rows), alias
