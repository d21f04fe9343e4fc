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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Activation:
    """A registered activation: how to build it and which family it belongs to."""

    name: str
    build: Callable[..., nn.Module]
    family: str  # "relu" (can die), "saturating" (bounded), or "other"
    torch_gain_name: str | None  # name understood by torch.nn.init.calculate_gain


_REGISTRY: dict[str, Activation] = {}


def register_activation(
    name: str, build: Callable[..., nn.Module], family: str, torch_gain_name: str | None
) -> None:
    """Add an activation to the registry (one line per activation below)."""
    if name in _REGISTRY:
        raise ValueError(f"activation {name!r} is already registered")
    _REGISTRY[name] = Activation(name, build, family, torch_gain_name)


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
