"""The CIFAR-style residual network of He et al. 2016 ("Deep Residual Learning", Sec. 4.2).

Depth 6n+2: a 3x3 stem conv, three stages of n basic blocks (two 3x3 convs each) with
``width``, ``2*width`` and ``4*width`` filters (the first block of stages 2 and 3 has stride
2), global average pooling and a linear head. ``resnet20``, ``resnet56`` and ``resnet110`` are
n = 3, 9 and 18.

Post-activation blocks, ``act(x + conv2(act(conv1(x))))`` (with ``bn`` after each conv when
``norm="batch"``): the original CIFAR network, and the one the Fixup paper trains without
normalization (ResNet-110 with standard init diverges; Fixup trains it), so its claims are
tested on the network they were made for. Shortcuts are the parameter-free "option A" of
both papers: the identity, or at a stride-2 block the input subsampled and zero-padded to the
new width, so every weight layer is in the stem, a branch or the head.

Normalization is off by default (``norm: none``); ``batch`` gives the comparison everyone asks
for. Convs have no bias by default, as in both papers. Layers are named ``conv1`` (the stem),
``layer{s}.block{b}.branch.conv{1,2}`` and ``head``; each block is an
:class:`~initbench.models.residual.ResidualBlock`, which the residual schemes change.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from initbench.fields import BOOL, POSITIVE, Field
from initbench.models.cnn import NORMS, check_norm_and_images, conv_norm
from initbench.models.mlp import ActivationFactory, activation_factory
from initbench.models.residual import ResidualBlock

STAGES = 3


class Downsample(nn.Module):
    """Option A shortcut: every ``stride``-th pixel, channels zero-padded to ``channels``."""

    def __init__(self, stride: int, channels: int) -> None:
        super().__init__()
        self.stride, self.channels = stride, channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, channels={self.channels}"


def blocks_per_stage(depth: int) -> int:
    """n of depth 6n+2; ValueError naming ``model.depth`` for any other depth."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"model.depth must be 6n+2 with n >= 1: 8, 14, 20, 32, 44, 56, 110, ... (got {depth})"
        )
    return (depth - 2) // 6


def check_resnet_args(input_shape: Sequence[int] | None, depth: int, width: int, norm: str) -> None:
    """Raise ValueError naming the field when the ResNet cannot be built as asked."""
    blocks_per_stage(depth)
    if width < 1:
        raise ValueError(f"model.width must be >= 1 (got {width})")
    check_norm_and_images("resnet", norm, input_shape)


class ResNet(nn.Sequential):
    """A CIFAR-style ResNet built from plain arguments.

    Args:
        input_shape: ``(channels, height, width)`` of one example.
        num_classes: width of the output layer (logits).
        depth: 6n+2 weight layers (20, 56, 110 are the presets).
        width: filters in the first stage (16 in He et al.), doubled at each later stage.
        activation: registry name of the non-linearity, or a zero-argument callable returning
            a fresh activation module.
        norm: ``"none"`` (default) or ``"batch"``.
        bias: whether the convs have a bias (the head always has one).
        activation_params: extra parameters of the activation (e.g. ``negative_slope``).
    """

    config_fields = {
        "depth": POSITIVE,  # and 6n+2: blocks_per_stage says so
        "width": POSITIVE,
        "norm": Field("choice", choices=NORMS),
        "bias": BOOL,
    }

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 20,
        width: int = 16,
        activation: str | ActivationFactory = "relu",
        norm: str = "none",
        bias: bool = False,
        activation_params: dict | None = None,
    ) -> None:
        check_resnet_args(input_shape, depth, width, norm)
        act = activation_factory(activation, activation_params)
        n = blocks_per_stage(depth)
        super().__init__()
        conv = functools.partial(conv_norm, bias=bias, norm=norm)
        for key, module in conv("1", input_shape[0], width, 1):
            self.add_module(key, module)
        self.add_module("act1", act())
        c_in = width
        for stage in range(STAGES):
            c_out = width * 2**stage
            blocks = nn.Sequential()
            for b in range(1, n + 1):
                stride = 2 if stage > 0 and b == 1 else 1
                branch = nn.Sequential(OrderedDict(
                    [*conv("1", c_in, c_out, stride), ("act1", act()), *conv("2", c_out, c_out, 1)]
                ))  # fmt: skip
                shortcut = Downsample(stride, c_out) if (stride, c_in) != (1, c_out) else None
                blocks.add_module(f"block{b}", ResidualBlock(branch, shortcut, post=act()))
                c_in = c_out
            self.add_module(f"layer{stage + 1}", blocks)
        self.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.add_module("flatten", nn.Flatten())
        self.add_module("head", nn.Linear(c_in, num_classes))
