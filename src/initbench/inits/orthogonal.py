"""Orthogonal schemes: dynamical isometry for deep linear and convolutional stacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .registry import InitContext, check_gain, register


def _check_orthogonal(hp: Mapping[str, Any]) -> None:
    check_gain(hp["gain"])


@register("orthogonal", hparams={"gain": 1.0}, validate=_check_orthogonal)
def orthogonal(weight: Tensor, ctx: InitContext, *, gain: float | str) -> None:
    """W = gain * Q, Q a random (Haar) orthogonal matrix: W W^T = gain^2 I when rows <= cols,
    W^T W = gain^2 I otherwise; a conv kernel is flattened to (c_out, c_in*k*k). Default
    gain = 1 ("auto" uses the activation's gain). Saxe et al. 2014, "Exact solutions to the
    nonlinear dynamics of learning in deep linear neural networks"."""
    nn.init.orthogonal_(weight, gain=ctx.gain(gain), generator=ctx.generator)


def _check_delta_shape(weight: Tensor) -> None:
    c_out, c_in = weight.shape[:2]
    if weight.dim() > 2 and c_in > c_out:
        raise ValueError(
            f"delta_orthogonal needs c_in <= c_out for a conv kernel (its centre tap is a "
            f"c_out x c_in matrix with orthonormal columns); got c_in={c_in}, c_out={c_out}"
        )


@register(
    "delta_orthogonal",
    hparams={"gain": 1.0},
    validate=_check_orthogonal,
    check_weight=_check_delta_shape,
)
def delta_orthogonal(weight: Tensor, ctx: InitContext, *, gain: float | str) -> None:
    """Conv kernel zero except the centre tap, which is gain * Q with Q a random c_out x c_in
    matrix with orthonormal columns (needs c_in <= c_out), so every conv layer is an isometry;
    Linear layers get plain orthogonal. Default gain = 1 ("auto" uses the activation's gain).
    Xiao et al. 2018, "Dynamical Isometry and a Mean Field Theory of CNNs"."""
    if weight.dim() == 2:
        nn.init.orthogonal_(weight, gain=ctx.gain(gain), generator=ctx.generator)
        return
    c_out, c_in = weight.shape[:2]
    centre_tap = torch.empty(c_out, c_in, dtype=weight.dtype, device=weight.device)
    nn.init.orthogonal_(centre_tap, gain=ctx.gain(gain), generator=ctx.generator)
    centre = tuple(k // 2 for k in weight.shape[2:])
    weight.zero_()
    weight[(slice(None), slice(None), *centre)] = centre_tap
