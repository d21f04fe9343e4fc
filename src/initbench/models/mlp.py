"""Multi-layer perceptron: flatten -> [Linear -> activation -> Dropout] x depth -> Linear head.

The default shape is the FashionMNIST MLP of the classic W&B initializer comparison
(dense hidden layers with dropout, softmax over the classes). Layers are named ``fc1 ..
fcN``, ``act1 .. actN`` and ``head`` so logs and reports can refer to them.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

from torch import nn

from initbench.fields import BOOL, POSITIVE, Field
from initbench.models.activations import make_activation

ActivationFactory = Callable[[], nn.Module]


class MLP(nn.Sequential):
    """A plain MLP built from plain arguments.

    Args:
        input_shape: shape of one example, e.g. ``(1, 28, 28)`` or ``(2,)``; it is flattened.
        num_classes: width of the output layer (logits).
        depth: hidden layers (>= 1), each ``width`` wide; ignored when ``widths`` is given.
        width: units per hidden layer (>= 1).
        widths: explicit hidden-layer widths, input side first.
        activation: registry name of the non-linearity (see ``list_activations()``), or a
            zero-argument callable returning a fresh activation module.
        dropout: dropout probability after each hidden activation, in [0, 1).
        bias: whether Linear layers have a bias.
        activation_params: extra parameters of a named activation (e.g. ``negative_slope``).
    """

    config_fields = {
        "depth": POSITIVE,
        "width": POSITIVE,
        "widths": Field("int_list", low=1, nullable=True),
        "dropout": Field("real", low=0, high=1, high_open=True),
        "bias": BOOL,
    }

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 2,
        width: int = 256,
        widths: Sequence[int] | None = None,
        activation: str | ActivationFactory = "relu",
        dropout: float = 0.0,
        bias: bool = True,
        activation_params: dict | None = None,
    ) -> None:
        if widths is not None:
            check_mlp_args(widths=widths, dropout=dropout)
        else:  # mlp_widths's checks, without its list of depth widths
            check_mlp_args(widths=mlp_widths(min(depth, 1), width), dropout=dropout)
        act = activation_factory(activation, activation_params)
        # Layers are registered one by one (not collected first), so that measuring the size
        # of an absurd depth on the meta device stops early (initbench.models.MAX_MODULES).
        super().__init__()
        self.add_module("flatten", nn.Flatten())
        fan_in = math.prod(input_shape)
        hidden = widths if widths is not None else itertools.repeat(width, depth)
        for i, w in enumerate(hidden, start=1):
            self.add_module(f"fc{i}", nn.Linear(fan_in, int(w), bias=bias))
            self.add_module(f"act{i}", act())
            if dropout > 0:
                self.add_module(f"drop{i}", nn.Dropout(dropout))
            fan_in = int(w)
        self.add_module("head", nn.Linear(fan_in, num_classes, bias=bias))


def activation_factory(
    activation: str | ActivationFactory, params: dict | None = None
) -> ActivationFactory:
    """A zero-argument callable making the activation: ``activation`` itself, or the registry's
    ``make_activation(name, **params)``."""
    if callable(activation):
        return activation
    return functools.partial(make_activation, activation, **(params or {}))


def mlp_widths(depth: int, width: int, widths: Sequence[int] | None = None) -> list[int]:
    """Hidden widths: the explicit ``widths`` list if given, else ``depth`` layers of ``width``."""
    if widths is not None:
        return [int(w) for w in widths]
    if depth < 1:
        raise ValueError(f"model.depth must be >= 1 (got {depth})")
    if width < 1:
        raise ValueError(f"model.width must be >= 1 (got {width})")
    return [width] * depth


def check_mlp_args(widths: Sequence[int], dropout: float) -> None:
    """Raise ValueError naming the field when the MLP's arguments are out of range."""
    if len(widths) == 0:
        raise ValueError("model.widths must list at least one hidden width (got [])")
    bad = [w for w in widths if int(w) < 1]
    if bad:
        raise ValueError(f"model.widths must all be >= 1 (got {list(widths)})")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout must be in [0, 1) (got {dropout})")
