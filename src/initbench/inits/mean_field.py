"""The mean-field initializer: the (sigma_w2, sigma_b2) parametrization of signal-propagation
theory (Poole et al. 2016; Schoenholz et al. 2017), whose fixed points and depth scales
:mod:`initbench.theory` computes for the same two numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .registry import InitContext, check_real, register
from .variance import variance_scaling_


def _check_mean_field(hp: Mapping[str, Any]) -> None:
    check_real("sigma_w2", hp["sigma_w2"], low=0, strict=True)
    check_real("sigma_b2", hp["sigma_b2"], low=0)


def _draw_bias(bias: Tensor, ctx: InitContext, *, sigma_w2: float, sigma_b2: float) -> None:
    bias.normal_(0.0, math.sqrt(float(sigma_b2)), generator=ctx.generator)


@register(
    "mean_field",
    hparams={"sigma_w2": 1.76, "sigma_b2": 0.05},
    bias="normal",
    validate=_check_mean_field,
    draw_bias=_draw_bias,
)
def mean_field(weight: Tensor, ctx: InitContext, *, sigma_w2: float, sigma_b2: float) -> None:
    """W ~ N(0, sigma_w2/fan_in) and, with bias "normal" (the default), b ~ N(0, sigma_b2).
    Defaults sigma_w2 = 1.76, sigma_b2 = 0.05: tanh's order-to-chaos transition (chi1 = 1) at
    that bias variance. Poole et al. 2016, "Exponential expressivity in deep neural networks
    through transient chaos"; Schoenholz et al. 2017, "Deep Information Propagation"."""
    variance_scaling_(
        weight, scale=float(sigma_w2), mode="fan_in", distribution="normal", generator=ctx.generator
    )
