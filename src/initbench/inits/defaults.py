"""Framework defaults: what a freshly built layer gets in PyTorch and in tf.keras."""

from __future__ import annotations

import math

from torch import Tensor, nn

from .registry import InitContext, register
from .variance import variance_scaling_


@register("pytorch_default", bias="default")
def pytorch_default(weight: Tensor, ctx: InitContext) -> None:
    """W ~ U(+-1/sqrt(fan_in)) and bias ~ U(+-1/sqrt(fan_in)): exactly nn.Linear / nn.Conv*d's
    reset_parameters (kaiming_uniform with a = sqrt(5)). No hparams besides bias (default
    "default"). Not from a paper: torch's choice, kept from Lua Torch."""
    # Call the very function nn.Linear calls, so a seeded draw matches a fresh layer exactly.
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=ctx.generator)


@register("keras_default")
def keras_default(weight: Tensor, ctx: InitContext) -> None:
    """W ~ U(+-sqrt(6/(fan_in + fan_out))) (glorot_uniform) and zero bias: the tf.keras Dense /
    Conv default. No hparams besides bias. Glorot & Bengio 2010."""
    variance_scaling_(
        weight, scale=1.0, mode="fan_avg", distribution="uniform", generator=ctx.generator
    )
