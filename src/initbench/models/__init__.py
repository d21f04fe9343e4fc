"""Models built from plain arguments: an MLP and a plain deep CNN.

``build_model("mlp" | "cnn", input_shape=..., num_classes=..., **params)`` is the one
entry point; ``check_model_params`` validates the same parameters before any data is loaded, and
``model_size`` counts the parameters and activations they make, without building anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from initbench.models.activations import (
    activation_gain,
    get_activation,
    list_activations,
    make_activation,
)
from initbench.models.cnn import PlainCNN, check_cnn_args, cnn_size
from initbench.models.mlp import MLP, check_mlp_args, mlp_size, mlp_widths
from initbench.models.size import ModelSize

ARCHS = ("mlp", "cnn")

__all__ = [
    "ARCHS",
    "MLP",
    "ModelSize",
    "PlainCNN",
    "activation_gain",
    "build_model",
    "check_model_params",
    "list_activations",
    "make_activation",
    "model_size",
]


def check_model_params(
    arch: str,
    *,
    activation: str,
    input_shape: Sequence[int] | None,
    depth: int,
    width: int,
    widths: Sequence[int] | None,
    dropout: float,
    channels: int,
    norm: str,
    bias: bool,
) -> None:
    """Validate :func:`build_model`'s arguments; ValueError names the field and the valid range.
    (A run's config is checked earlier, by initbench.config; this guards library calls.)"""
    if arch not in ARCHS:
        raise ValueError(f"unknown model.arch {arch!r}; valid: {', '.join(ARCHS)}")
    get_activation(activation)
    if arch == "mlp":
        check_mlp_args(mlp_widths(depth, width, widths), dropout)
    else:
        check_cnn_args(input_shape, depth, channels, norm)


def build_model(
    arch: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    activation: str = "relu",
    activation_params: dict | None = None,
    depth: int = 2,
    width: int = 256,
    widths: Sequence[int] | None = None,
    dropout: float = 0.0,
    channels: int = 16,
    norm: str = "none",
    bias: bool = True,
) -> nn.Module:
    """Build ``arch`` ("mlp" or "cnn") for examples of ``input_shape`` and ``num_classes`` classes.

    MLP uses ``depth``/``width`` (or ``widths``) and ``dropout``; CNN uses ``depth``,
    ``channels`` and ``norm``. Both use ``activation``, ``activation_params`` and ``bias``.
    """
    check_model_params(
        arch,
        activation=activation,
        input_shape=input_shape,
        depth=depth,
        width=width,
        widths=widths,
        dropout=dropout,
        channels=channels,
        norm=norm,
        bias=bias,
    )
    common = dict(activation=activation, bias=bias, activation_params=activation_params)
    if arch == "mlp":
        return MLP(
            input_shape, num_classes, mlp_widths(depth, width, widths), dropout=dropout, **common
        )
    return PlainCNN(input_shape, num_classes, depth, channels, norm=norm, **common)


def model_size(
    arch: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    depth: int = 2,
    width: int = 256,
    widths: Sequence[int] | None = None,
    dropout: float = 0.0,
    channels: int = 16,
    norm: str = "none",
    bias: bool = True,
) -> ModelSize:
    """Parameters and per-example activations of ``build_model(arch, ...)`` with the same
    arguments (the activation does not matter), computed from them alone: cheap for any size.

    Raises:
        ValueError: arguments :func:`build_model` refuses (an unknown arch, a bad shape).
    """
    if arch == "mlp":
        return mlp_size(input_shape, num_classes, depth, width, widths, dropout=dropout, bias=bias)
    if arch == "cnn":
        return cnn_size(input_shape, num_classes, depth, channels, norm=norm, bias=bias)
    raise ValueError(f"unknown model.arch {arch!r}; valid: {', '.join(ARCHS)}")
