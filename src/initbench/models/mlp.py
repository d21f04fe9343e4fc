"""Multi-layer perceptron: flatten -> [Linear -> activation -> Dropout] x depth -> Linear head.

The default shape is the FashionMNIST MLP of the classic W&B initializer comparison
(dense hidden layers with dropout, softmax over the classes). Layers are named ``fc1 ..
fcN``, ``act1 .. actN`` and ``head`` so logs and reports can refer to them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from initbench.models.activations import make_activation
from initbench.models.size import ModelSize


class MLP(nn.Sequential):
    """A plain MLP built from plain arguments.

    Args:
        input_shape: shape of one example, e.g. ``(1, 28, 28)`` or ``(2,)``; it is flattened.
        num_classes: width of the output layer (logits).
        widths: hidden-layer widths, input side first.
        activation: registry name of the non-linearity (see ``list_activations()``).
        dropout: dropout probability after each hidden activation, in [0, 1).
        bias: whether Linear layers have a bias.
        activation_params: extra parameters of the activation (e.g. ``negative_slope``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        bias: bool = True,
        activation_params: dict | None = None,
    ) -> None:
        check_mlp_args(widths=widths, dropout=dropout)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        fan_in = math.prod(input_shape)
        for i, width in enumerate(widths, start=1):
            layers[f"fc{i}"] = nn.Linear(fan_in, width, bias=bias)
            layers[f"act{i}"] = make_activation(activation, **(activation_params or {}))
            if dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(dropout)
            fan_in = width
        layers["head"] = nn.Linear(fan_in, num_classes, bias=bias)
        super().__init__(layers)


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


def mlp_size(
    input_shape: Sequence[int],
    num_classes: int,
    depth: int,
    width: int,
    widths: Sequence[int] | None = None,
    *,
    dropout: float = 0.0,
    bias: bool = True,
) -> ModelSize:
    """The size of ``MLP(input_shape, num_classes, mlp_widths(depth, width, widths), ...)``
    without building it, nor the list of ``depth`` widths (``depth`` may be 10**8).

    Raises:
        ValueError: the arguments :class:`MLP` refuses.
    """
    if widths is not None:
        check_mlp_args(widths, dropout)
        layers = [(int(w), 1) for w in widths]  # (width, how many layers in a row have it)
    else:  # mlp_widths's checks, without its list of depth widths
        check_mlp_args(mlp_widths(min(depth, 1), width), dropout)
        layers = [(width, depth)]
    per_layer = 3 if dropout > 0 else 2  # Linear, activation (and Dropout) outputs
    fan_in = math.prod(input_shape)
    params, activations, widest = 0, fan_in, fan_in  # the input batch
    for w, count in layers:
        params += (fan_in * w + bias * w) + (count - 1) * (w * w + bias * w)
        activations += count * per_layer * w
        widest = max(widest, w)
        fan_in = w
    params += fan_in * num_classes + bias * num_classes  # the head
    return ModelSize(params, activations + num_classes, max(widest, num_classes))
