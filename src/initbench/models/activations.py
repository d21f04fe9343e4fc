"""Activation registry and per-activation gains.

Every activation the benchmark can use is registered here under a canonical name. The
models build their non-linearities with :func:`make_activation`; the initializers ask
:func:`activation_gain` for the gain that keeps the forward signal's scale.

Gains follow ``torch.nn.init.calculate_gain`` where it defines one (linear, sigmoid,
tanh, relu, leaky_relu, selu). For activations it does not define, the gain is computed
numerically as ``1 / sqrt(E[f(z)^2])`` with ``z ~ N(0, 1)`` (the factor that restores a
unit second moment after the non-linearity; it gives sqrt(2) for ReLU). Values:

    gelu      ~1.5335
    silu      ~1.6765
    softsign  ~2.3377

``tat`` is TAT's transformed leaky ReLU (Zhang, Botev & Martens 2022, "Deep Learning without
Shortcuts"): its slope is solved for the network it is in (:func:`prepare_activations`, which
``build_model`` calls), and its gain is 1 by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import Tensor, nn

from initbench.fields import Field


@dataclass(frozen=True)
class Activation:
    """A registered activation: how to build it and which family it belongs to."""

    name: str
    build: Callable[..., nn.Module]
    family: str  # "relu" (can die), "saturating" (bounded), or "other"
    torch_gain_name: str | None  # name understood by torch.nn.init.calculate_gain
    gain: float | None = None  # a gain fixed by construction (tat: 1)
    # The parameters' types where they are not all finite numbers (tat's depth may be null).
    fields: dict[str, Field] | None = None


_REGISTRY: dict[str, Activation] = {}


def register_activation(
    name: str,
    build: Callable[..., nn.Module],
    family: str,
    torch_gain_name: str | None,
    gain: float | None = None,
    fields: dict[str, Field] | None = None,
) -> None:
    """Add an activation to the registry (one line per activation below)."""
    if name in _REGISTRY:
        raise ValueError(f"activation {name!r} is already registered")
    _REGISTRY[name] = Activation(name, build, family, torch_gain_name, gain, fields)


register_activation("relu", lambda: nn.ReLU(), "relu", "relu")
register_activation(
    "leaky_relu",
    lambda negative_slope=0.01: nn.LeakyReLU(negative_slope),
    "relu",
    "leaky_relu",
)
register_activation("tanh", lambda: nn.Tanh(), "saturating", "tanh")
register_activation("sigmoid", lambda: nn.Sigmoid(), "saturating", "sigmoid")
register_activation("softsign", lambda: nn.Softsign(), "saturating", None)
register_activation("selu", lambda: nn.SELU(), "other", "selu")
register_activation("gelu", lambda: nn.GELU(), "other", None)
register_activation("silu", lambda: nn.SiLU(), "other", None)
register_activation("linear", lambda: nn.Identity(), "other", "linear")


# TAT's parameters (conf/activation/tat.yaml): the target C(0), and the depth to solve for.
TAT_ETA = Field("real", low=0, high=1, low_open=True, high_open=True)
TAT_DEPTH = Field("int", low=1, nullable=True)


def leaky_relu_cmap(c: float | np.ndarray, alpha: float) -> float | np.ndarray:
    """The local C-map of TAT's leaky ReLU, sqrt(2/(1+a^2)) LReLU_a, at unit input length: the
    output correlation of two unit-variance Gaussian inputs of correlation ``c``,
    C(c) = c + (1-a)^2/(pi(1+a^2)) (sqrt(1-c^2) - c arccos c)."""
    c = np.clip(c, -1.0, 1.0)
    return c + (1 - alpha) ** 2 / (np.pi * (1 + alpha**2)) * (np.sqrt(1 - c**2) - c * np.arccos(c))


@cache
def tat_slope(depth: int, eta: float) -> float:
    """TAT's negative slope a for a plain network of ``depth`` leaky-ReLU layers: the a in
    [0, 1] at which the C-map composed ``depth`` times sends 0 to ``eta`` (bisection; C^L(0)
    falls as a rises, from ReLU's value at a = 0 to 0 at a = 1).

    Raises:
        ValueError: ``eta`` out of (0, 1), or a network too shallow to reach it (even a = 0).
    """
    TAT_ETA.check("activation.eta", eta)
    Field("int", low=1).check("TAT's depth", depth)

    def c0(alpha: float) -> float:
        c = 0.0
        for _ in range(depth):
            c = float(leaky_relu_cmap(c, alpha))
        return c

    if c0(0.0) < eta:
        raise ValueError(
            f"activation=tat: a network of {depth} leaky-ReLU layers cannot reach "
            f"C(0) = eta = {eta} (ReLU itself gives {c0(0.0):.3f}); lower activation.eta or use "
            "a deeper network"
        )
    low, high = 0.0, 1.0
    for _ in range(60):  # C^L(0) decreases in alpha; 2^-60 is below float precision
        mid = 0.5 * (low + high)
        low, high = (mid, high) if c0(mid) > eta else (low, mid)
    return 0.5 * (low + high)


class TAT(nn.Module):
    """TAT's transformed leaky ReLU, phi(x) = sqrt(2/(1+a^2)) LReLU_a(x) (Zhang, Botev &
    Martens 2022): a unit-variance Gaussian input gives a unit second moment (gain 1), and the
    slope a is solved so that the network's C-map sends correlation 0 to ``eta`` (0.9 keeps a
    deep plain network close to, but not, linear).

    Args:
        eta: the target C_f(0), in (0, 1).
        depth: leaky-ReLU layers to solve for; None counts the model's TAT modules
            (:func:`prepare_activations`). Until it is solved the module refuses to run.

    ``negative_slope`` and ``scale`` are buffers, so a pack's members each carry theirs.
    """

    def __init__(self, eta: float = 0.9, depth: int | None = None) -> None:
        super().__init__()
        TAT_ETA.check("activation.eta", eta)
        TAT_DEPTH.check("activation.depth", depth)
        self.eta, self.depth = float(eta), depth
        self.register_buffer("negative_slope", torch.tensor(float("nan")))
        self.register_buffer("scale", torch.tensor(float("nan")))
        if depth is not None:
            self.solve(depth)

    def solve(self, depth: int) -> None:
        """Set the slope and scale for a network of ``depth`` TAT layers."""
        alpha = tat_slope(int(depth), self.eta)
        with torch.no_grad():
            self.negative_slope.fill_(alpha)
            self.scale.fill_(math.sqrt(2.0 / (1.0 + alpha**2)))
        self.depth = int(depth)

    def forward(self, x: Tensor) -> Tensor:
        if self.depth is None:
            raise RuntimeError(
                "TAT's slope is not solved: build the model with initbench.models.build_model "
                "(or call initbench.models.prepare_activations(model))"
            )
        slope = self.negative_slope.to(x.dtype)
        return torch.where(x >= 0, x, x * slope) * self.scale.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"eta={self.eta}, depth={self.depth}, negative_slope={float(self.negative_slope):.4f}"
        )


register_activation(
    "tat", TAT, "relu", None, gain=1.0,
    fields={"eta": TAT_ETA, "depth": TAT_DEPTH},
)  # fmt: skip


def prepare_activations(model: nn.Module) -> None:
    """Solve what an activation needs to know about the network it is in: every TAT module
    whose depth was not given gets the slope for the number of TAT modules in ``model``."""
    tat = [m for m in model.modules() if isinstance(m, TAT)]
    for module in tat:
        if module.depth is None:
            module.solve(len(tat))


def list_activations() -> list[str]:
    """Canonical activation names, in registration order."""
    return list(_REGISTRY)


def get_activation(name: str) -> Activation:
    """Look up a registered activation; unknown names raise ValueError listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid activations: {', '.join(_REGISTRY)}"
        ) from None


def make_activation(name: str, **params: float) -> nn.Module:
    """Build the activation ``name``, e.g. ``make_activation("leaky_relu", negative_slope=0.2)``."""
    act = get_activation(name)
    try:
        return act.build(**params)
    except TypeError:
        raise ValueError(f"activation {name!r} does not take parameters {sorted(params)}") from None


def activation_name(module: nn.Module) -> str:
    """The registry name of an activation module built by :func:`make_activation`."""
    for name, act in _REGISTRY.items():
        if type(module) is type(act.build()):
            return name
    raise ValueError(f"{type(module).__name__} is not a registered activation")


def _numeric_gain(fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    # E[f(z)^2] for z ~ N(0,1) by Gauss-Hermite quadrature (probabilists' weights).
    nodes, weights = np.polynomial.hermite_e.hermegauss(201)
    z = torch.as_tensor(nodes, dtype=torch.float64)
    second_moment = float((torch.as_tensor(weights) * fn(z) ** 2).sum()) / math.sqrt(2 * math.pi)
    return 1.0 / math.sqrt(second_moment)


@cache
def _gain_by_name(name: str, negative_slope: float | None) -> float:
    act = get_activation(name)
    if act.gain is not None:
        return act.gain
    if act.torch_gain_name is not None:
        param = negative_slope if name == "leaky_relu" else None
        return float(nn.init.calculate_gain(act.torch_gain_name, param))
    return _numeric_gain(act.build())


def activation_gain(activation: str | nn.Module, negative_slope: float | None = None) -> float:
    """Gain for ``activation`` (a registry name or a module from :func:`make_activation`).

    For leaky_relu the slope comes from the module, or ``negative_slope``, or torch's default 0.01.
    """
    if isinstance(activation, nn.Module):
        if isinstance(activation, nn.LeakyReLU):
            negative_slope = activation.negative_slope
        activation = activation_name(activation)
    if activation == "leaky_relu" and negative_slope is None:
        negative_slope = 0.01
    return _gain_by_name(activation, negative_slope)
