"""Plain deep CNN (no residual connections), as in the 22- and 30-layer models of He et al. 2015.

``depth`` 3x3 conv layers split over up to three stages of ``channels``, ``2*channels`` and
``4*channels`` filters; the first conv of stages 2 and 3 has stride 2 (downsampling). Then
global average pooling and a linear head. Normalization is off by default: batch norm
would hide what the initialization does. Layers are named ``conv1 .. convN``,
``act1 .. actN`` (``bn1 ..`` with ``norm="batch"``) and ``head``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from initbench.fields import BOOL, POSITIVE, Field
from initbench.models.mlp import ActivationFactory, activation_factory

NORMS = ("none", "batch")


def stage_depths(depth: int) -> list[int]:
    """Conv layers per stage: ``depth`` split as evenly as possible over up to three stages."""
    n_stages = min(3, depth)
    return [depth // n_stages + (1 if i < depth % n_stages else 0) for i in range(n_stages)]


def check_norm_and_images(model: str, norm: str, input_shape: Sequence[int] | None) -> None:
    """The convolutional models' shared checks: ``model.norm`` is one of :data:`NORMS`, and
    the examples are images (channels, height, width). ValueError naming the field."""
    if norm not in NORMS:
        raise ValueError(f"model.norm must be one of {', '.join(NORMS)} (got {norm!r})")
    if input_shape is not None and len(input_shape) != 3:
        raise ValueError(
            f"model={model} needs image input (channels, height, width); the dataset gives "
            f"examples of shape {tuple(input_shape)}: use model=mlp for vector data"
        )


def conv_norm(
    name: str, c_in: int, c_out: int, stride: int, *, bias: bool, norm: str
) -> list[tuple[str, nn.Module]]:
    """A 3x3 conv (``conv<name>``, padding 1) and, with ``norm="batch"``, its batch norm
    (``bn<name>``), as ``(name, module)`` pairs to register one by one."""
    layers: list[tuple[str, nn.Module]] = [
        (f"conv{name}", nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=bias))
    ]
    if norm == "batch":
        layers.append((f"bn{name}", nn.BatchNorm2d(c_out)))
    return layers


def check_cnn_args(input_shape: Sequence[int] | None, depth: int, channels: int, norm: str) -> None:
    """Raise ValueError naming the field when the CNN cannot be built as asked."""
    if depth < 1:
        raise ValueError(f"model.depth must be >= 1 (got {depth})")
    if channels < 1:
        raise ValueError(f"model.channels must be >= 1 (got {channels})")
    check_norm_and_images("cnn", norm, input_shape)
    if input_shape is None:
        return
    downsamplings = len(stage_depths(depth)) - 1
    smallest = min(input_shape[1:])
    if smallest < 2**downsamplings:
        raise ValueError(
            f"model.depth={depth} gives {downsamplings} stride-2 stages, too many for "
            f"{input_shape[1]}x{input_shape[2]} images (need at least {2**downsamplings} pixels)"
        )


class PlainCNN(nn.Sequential):
    """A plain CNN built from plain arguments.

    Args:
        input_shape: ``(channels, height, width)`` of one example.
        num_classes: width of the output layer (logits).
        depth: number of 3x3 conv layers (1 and up; 22 and 30 are the He et al. presets).
        channels: filters in the first stage (doubled at each later stage).
        activation: registry name of the non-linearity, or a zero-argument callable returning
            a fresh activation module.
        norm: ``"none"`` (default) or ``"batch"``.
        bias: whether conv and head layers have a bias.
        activation_params: extra parameters of the activation (e.g. ``negative_slope``).
    """

    config_fields = {
        "depth": POSITIVE,
        "channels": POSITIVE,
        "norm": Field("choice", choices=NORMS),
        "bias": BOOL,
    }

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 10,
        channels: int = 16,
        activation: str | ActivationFactory = "relu",
        norm: str = "none",
        bias: bool = True,
        activation_params: dict | None = None,
    ) -> None:
        check_cnn_args(input_shape, depth, channels, norm)
        act = activation_factory(activation, activation_params)
        super().__init__()  # layers registered one by one, as the MLP's (MAX_MODULES)
        c_in, i = input_shape[0], 0
        for stage, n_layers in enumerate(stage_depths(depth)):
            c_out = channels * 2**stage
            for j in range(n_layers):
                i += 1
                stride = 2 if stage > 0 and j == 0 else 1
                for key, module in conv_norm(str(i), c_in, c_out, stride, bias=bias, norm=norm):
                    self.add_module(key, module)
                self.add_module(f"act{i}", act())
                c_in = c_out
        self.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.add_module("flatten", nn.Flatten())
        self.add_module("head", nn.Linear(c_in, num_classes, bias=bias))
