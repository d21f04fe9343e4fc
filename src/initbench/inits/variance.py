"""Fan-scaled schemes: the variance-scaling family and the named schemes built on it.

Every scheme here draws W with Var(W) = scale / n, n being fan_in, fan_out or their mean:

    normal:            N(0, scale/n)
    truncated_normal:  N(0, s^2) cut at +-2s, s = sqrt(scale/n) / 0.8796..., so Var(W) = scale/n
    uniform:           U(+-sqrt(3 * scale/n))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .registry import (
    InitContext,
    check_bool,
    check_choice,
    check_gain,
    check_real,
    fan_in_and_fan_out,
    register,
)

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
# Std of a unit normal truncated to [-2, 2]; dividing by it restores the requested variance
# after truncation (TF/Keras VarianceScaling).
TRUNCATED_NORMAL_STD = 0.87962566103423978


def variance_scaling_(
    weight: Tensor,
    *,
    scale: float,
    mode: str,
    distribution: str,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill ``weight`` in place with Var(W) = scale / n (n from ``mode``), as tf.keras does."""
    fan_in, fan_out = fan_in_and_fan_out(weight)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(scale / max(1.0, n))
    if distribution == "normal":
        weight.normal_(0.0, std, generator=generator)
    elif distribution == "truncated_normal":
        std /= TRUNCATED_NORMAL_STD
        nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)
    else:
        limit = math.sqrt(3.0) * std
        weight.uniform_(-limit, limit, generator=generator)
    return weight


def _check_variance_scaling(hp: Mapping[str, Any]) -> None:
    check_real("scale", hp["scale"], low=0, strict=True)
    check_choice("mode", hp["mode"], MODES)
    check_choice("distribution", hp["distribution"], DISTRIBUTIONS)


@register(
    "variance_scaling",
    hparams={"scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal"},
    validate=_check_variance_scaling,
)
def variance_scaling(
    weight: Tensor, ctx: InitContext, *, scale: float, mode: str, distribution: str
) -> None:
    """Var(W) = scale / n, n = fan_in | fan_out | (fan_in + fan_out)/2; normal, truncated
    normal (cut at +-2 std, std corrected by 1/0.8796) or uniform U(+-sqrt(3 scale/n)).
    Defaults scale = 1, mode = fan_in, distribution = truncated_normal (tf.keras
    VarianceScaling); the general family of LeCun 1998, Glorot & Bengio 2010, He et al. 2015."""
    variance_scaling_(
        weight, scale=scale, mode=mode, distribution=distribution, generator=ctx.generator
    )


@register("lecun_uniform")
def lecun_uniform(weight: Tensor, ctx: InitContext) -> None:
    """W ~ U(+-sqrt(3/fan_in)), i.e. Var(W) = 1/fan_in. No hparams. LeCun et al. 1998,
    "Efficient BackProp"."""
    variance_scaling_(
        weight, scale=1.0, mode="fan_in", distribution="uniform", generator=ctx.generator
    )


def _check_lecun_normal(hp: Mapping[str, Any]) -> None:
    check_bool("truncated", hp["truncated"])


@register(
    "lecun_normal",
    aliases=("lecun",),
    hparams={"truncated": False},
    validate=_check_lecun_normal,
)
def lecun_normal(weight: Tensor, ctx: InitContext, *, truncated: bool) -> None:
    """W ~ N(0, 1/fan_in); with truncated = true, a normal cut at +-2 std with the std corrected
    so Var(W) is still 1/fan_in (as tf.keras). Default truncated = false. LeCun et al. 1998,
    "Efficient BackProp"; the SELU init of Klambauer et al. 2017."""
    distribution = "truncated_normal" if truncated else "normal"
    variance_scaling_(
        weight, scale=1.0, mode="fan_in", distribution=distribution, generator=ctx.generator
    )


def _check_xavier(hp: Mapping[str, Any]) -> None:
    check_gain(hp["gain"])


@register(
    "xavier_uniform",
    aliases=("xavier", "glorot_uniform"),
    hparams={"gain": 1.0},
    validate=_check_xavier,
)
def xavier_uniform(weight: Tensor, ctx: InitContext, *, gain: float | str) -> None:
    """W ~ U(+-gain * sqrt(6/(fan_in + fan_out))). Default gain = 1 as in the paper; "auto"
    uses the activation's gain. Glorot & Bengio 2010, "Understanding the difficulty of
    training deep feedforward neural networks"."""
    variance_scaling_(
        weight,
        scale=ctx.gain(gain) ** 2,
        mode="fan_avg",
        distribution="uniform",
        generator=ctx.generator,
    )


@register(
    "xavier_normal",
    aliases=("glorot_normal",),
    hparams={"gain": 1.0},
    validate=_check_xavier,
)
def xavier_normal(weight: Tensor, ctx: InitContext, *, gain: float | str) -> None:
    """W ~ N(0, gain^2 * 2/(fan_in + fan_out)). Default gain = 1 as in the paper; "auto" uses
    the activation's gain. Glorot & Bengio 2010."""
    variance_scaling_(
        weight,
        scale=ctx.gain(gain) ** 2,
        mode="fan_avg",
        distribution="normal",
        generator=ctx.generator,
    )


def _check_kaiming(hp: Mapping[str, Any]) -> None:
    check_choice("mode", hp["mode"], ("fan_in", "fan_out"))


@register(
    "kaiming_uniform",
    aliases=("he_uniform",),
    hparams={"mode": "fan_in"},
    validate=_check_kaiming,
)
def kaiming_uniform(weight: Tensor, ctx: InitContext, *, mode: str) -> None:
    """W ~ U(+-g * sqrt(3/fan)), i.e. std = g/sqrt(fan), g the activation's gain (sqrt(2) for
    relu, sqrt(2/(1+a^2)) for leaky relu with slope a, ...). Default mode = fan_in (forward
    variance; fan_out keeps the backward one). He et al. 2015, "Delving Deep into Rectifiers"."""
    variance_scaling_(
        weight,
        scale=ctx.activation_gain**2,
        mode=mode,
        distribution="uniform",
        generator=ctx.generator,
    )


@register(
    "kaiming_normal",
    aliases=("kaiming", "he_normal"),
    hparams={"mode": "fan_in"},
    validate=_check_kaiming,
)
def kaiming_normal(weight: Tensor, ctx: InitContext, *, mode: str) -> None:
    """W ~ N(0, g^2/fan), g the activation's gain (sqrt(2) for relu, sqrt(2/(1+a^2)) for leaky
    relu, ...). Default mode = fan_in (fan_out keeps the backward variance). He et al. 2015,
    "Delving Deep into Rectifiers"."""
    variance_scaling_(
        weight,
        scale=ctx.activation_gain**2,
        mode=mode,
        distribution="normal",
        generator=ctx.generator,
    )
