"""Orthogonal schemes: dynamical isometry for deep linear and convolutional stacks."""

from __future__ import annotations

import math
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
    _delta_orthogonal(weight, ctx.gain(gain), ctx.generator)


def _delta_orthogonal(weight: Tensor, gain: float, generator: torch.Generator | None) -> None:
    """``weight`` = gain * Q, Q a random c_out x c_in matrix with orthonormal rows or columns,
    at a conv kernel's centre tap (:func:`_at_centre`)."""
    tap = torch.empty(weight.shape[:2], dtype=weight.dtype, device=weight.device)
    nn.init.orthogonal_(tap, gain=gain, generator=generator)
    _at_centre(weight, tap)


def _at_centre(weight: Tensor, matrix: Tensor) -> None:
    """A Linear weight set to the c_out x c_in ``matrix``; a conv kernel zero except its centre
    tap (index k // 2 along each spatial dimension), which is ``matrix``."""
    if weight.dim() == 2:
        weight.copy_(matrix)
        return
    weight.zero_()
    weight[(slice(None), slice(None), *(k // 2 for k in weight.shape[2:]))] = matrix


@register("scaled_orthogonal", aliases=("tat",))
def scaled_orthogonal(weight: Tensor, ctx: InitContext) -> None:
    """TAT's weights, "scaled uniform orthogonal": W = max(1, sqrt(out/in)) * Q with Q a random
    out x in matrix with orthonormal rows (out <= in) or columns (out > in), so each unit's
    second moment is kept whatever the layer's shape; a conv kernel is zero except its centre
    tap, which is that matrix for (c_out, c_in) (delta-orthogonal, any c_in, c_out).
    No hparams; biases zero. Pair with activation=tat. Martens et al. 2021, "Rapid training of
    deep neural networks without skip connections or normalization layers using Deep Kernel
    Shaping"; Zhang, Botev & Martens 2022, "Deep Learning without Shortcuts"."""
    c_out, c_in = weight.shape[:2]
    _delta_orthogonal(weight, max(1.0, math.sqrt(c_out / c_in)), ctx.generator)


def hadamard(n: int) -> Tensor:
    """The n x n Sylvester Hadamard matrix (entries +-1, n a power of 2), as
    ``scipy.linalg.hadamard``."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def zero_matrix(rows: int, cols: int) -> Tensor:
    """ZerO's deterministic rows x cols matrix: the partial identity I[:rows, :cols] when
    rows <= cols; else 2^(-m/2) H[:rows, :cols], H the 2^m x 2^m Hadamard matrix,
    m = ceil(log2 rows) (the authors' code)."""
    if rows <= cols:
        return torch.eye(rows, cols)
    m = math.ceil(math.log2(rows))
    return hadamard(2**m)[:rows, :cols] / 2 ** (m / 2)


@register("zero_init")
def zero_init(weight: Tensor, ctx: InitContext) -> None:
    """ZerO, deterministic (no random draw): an out x in weight is the identity when out = in,
    a partial identity (the first ``out`` inputs passed through) when out < in, and
    2^(-m/2) H[:out, :in] with H the Sylvester Hadamard matrix of size 2^m, m = ceil(log2 out),
    when out > in; a conv kernel is zero except its centre tap, that matrix for (c_out, c_in).
    In a residual network (ResidualBlock branches) its residual form: the last layer of each
    branch is zero, so every block starts as its shortcut. No hparams; biases zero. Not the
    same as ``zeros``. Zhao et al. 2022, "ZerO Initialization: Initializing Neural Networks
    with only Zeros and Ones"."""
    where = ctx.branch()
    if where is not None and where[0] == where[1] - 1:  # the last layer of a residual branch
        weight.zero_()
        return
    _at_centre(weight, zero_matrix(*weight.shape[:2]).to(weight.dtype))
