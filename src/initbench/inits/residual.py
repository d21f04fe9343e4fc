"""Schemes made for residual networks without normalization: Fixup, SkipInit and ReZero.

Each adds scalar parameters to the model's residual blocks
(:class:`~initbench.models.ResidualBlock`; ``structure`` in the registry) and draws the
layers; ZerO's residual form is ``zero_init`` on a residual network (orthogonal.py). A model
without residual blocks is refused with a message that says how to get some.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from initbench.models.activations import activation_name
from initbench.models.residual import (
    LAYER_TYPES,
    Gate,
    ScalarBias,
    claim,
    insert_before,
    require_blocks,
)

from .registry import InitContext, check_choice, check_real, register
from .variance import variance_scaling_


def _is_activation(module: nn.Module) -> bool:
    """An activation module: the registry's, or any of torch.nn's."""
    if type(module).__module__ == nn.ReLU.__module__:
        return True
    try:
        activation_name(module)
    except ValueError:
        return False
    return True


def _weight_or_activation(module: nn.Module) -> bool:
    return isinstance(module, LAYER_TYPES) or _is_activation(module)


def _he(weight: Tensor, ctx: InitContext, mode: str, factor: float = 1.0) -> None:
    """N(0, (factor * g)^2 / fan), g the activation's gain (He et al. 2015)."""
    variance_scaling_(weight, scale=(factor * ctx.activation_gain) ** 2, mode=mode,
                      distribution="normal", generator=ctx.generator)  # fmt: skip


def _reset(model: nn.Module, scale: float) -> None:
    """The scalars a residual scheme added, at their initial values: biases 0, gates ``scale``."""
    for m in model.modules():
        if isinstance(m, ScalarBias):
            m.bias.zero_()
        elif isinstance(m, Gate):
            m.scale.fill_(scale)
            if m.bias is not None:
                m.bias.zero_()


def _check_mode(hp: Mapping[str, Any]) -> None:
    check_choice("mode", hp["mode"], ("fan_in", "fan_out"))


def _check_alpha(hp: Mapping[str, Any]) -> None:
    _check_mode(hp)
    check_real("alpha", hp["alpha"])


# ----------------------------------------------------------------------------- Fixup


def _fixup_structure(model: nn.Module, *, scalar_lr: float, **_: Any) -> None:
    """Fixup's scalars: a bias at each branch's entry (which a downsampling shortcut also sees)
    and before each of its weight layers and activations after the first, a multiplier (1) and
    a bias at its end; and, when the model is an ``nn.Sequential``, a bias before each of its
    own activations and weight layers after the first (the stem's activation, the head). They
    train at ``scalar_lr`` times the run's learning rate."""
    for _, block in require_blocks(model, "fixup"):
        if claim(block, "fixup"):
            block.entry = ScalarBias()
            block.gate = Gate(1.0, bias=True)
            insert_before(block.branch, _weight_or_activation, skip_first=True)
    top = isinstance(model, nn.Sequential)
    if top and not any(isinstance(child, ScalarBias) for child in model.children()):
        insert_before(model, _weight_or_activation, skip_first=True)
    _reset(model, 1.0)
    for m in model.modules():
        if isinstance(m, (ScalarBias, Gate)):
            m.lr_scale = float(scalar_lr)


def _check_fixup(hp: Mapping[str, Any]) -> None:
    _check_mode(hp)
    check_real("scalar_lr", hp["scalar_lr"], low=0, strict=True)


@register(
    "fixup",
    hparams={"mode": "fan_out", "scalar_lr": 0.1},
    validate=_check_fixup,
    structure=_fixup_structure,
)
def fixup(weight: Tensor, ctx: InitContext, *, mode: str, scalar_lr: float) -> None:
    """Fixup: the last layer of each residual branch and the classifier (the model's last
    Linear layer) at zero; the other layers of a branch of m layers He-normal scaled by
    L^(-1/(2m-2)), L the number of residual branches; every other layer He-normal. Adds a
    scalar bias at each branch's entry, before each of its later layers and activations and at
    its end, a scalar multiplier (1) on each branch, and a bias before the stem's activation and
    the head (in an nn.Sequential model); they train at scalar_lr times the run's learning
    rate. Defaults: mode = fan_out and scalar_lr = 0.1, as the authors' code. Zhang, Dauphin &
    Ma 2019, "Fixup Initialization: Residual Learning Without Normalization"."""
    where = ctx.branch()
    if where is not None:
        position, m, branches = where
        if position == m - 1:
            weight.zero_()
            return
        _he(weight, ctx, mode, branches ** (-1 / (2 * m - 2)))
    elif ctx.index == ctx.num_layers - 1 and weight.dim() == 2:  # the classifier
        weight.zero_()
    else:
        _he(weight, ctx, mode)


# ----------------------------------------------------------------------------- SkipInit, ReZero


def _gates(model: nn.Module, form: str, alpha: float, remove_post: bool) -> None:
    for _, block in require_blocks(model, form):
        if claim(block, form):
            block.gate = Gate(alpha)
            if remove_post:
                block.post = nn.Identity()
    _reset(model, float(alpha))


def _skipinit_structure(model: nn.Module, *, alpha: float, **_: Any) -> None:
    _gates(model, "skipinit", alpha, remove_post=False)


def _rezero_structure(model: nn.Module, *, alpha: float, **_: Any) -> None:
    _gates(model, "rezero", alpha, remove_post=True)


@register(
    "skipinit",
    hparams={"alpha": 0.0, "mode": "fan_in"},
    validate=_check_alpha,
    structure=_skipinit_structure,
)
def skipinit(weight: Tensor, ctx: InitContext, *, alpha: float, mode: str) -> None:
    """SkipInit: a trainable scalar alpha multiplies each residual branch, so every block starts
    as its shortcut; the layers are He-normal. Defaults: alpha = 0, mode = fan_in. The block's
    activation after the sum stays. Adds one parameter per residual branch. De & Smith 2020,
    "Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep
    Networks"."""
    _he(weight, ctx, mode)


@register(
    "rezero",
    hparams={"alpha": 0.0, "mode": "fan_in"},
    validate=_check_alpha,
    structure=_rezero_structure,
)
def rezero(weight: Tensor, ctx: InitContext, *, alpha: float, mode: str) -> None:
    """ReZero: each block becomes x + alpha * F(x) with a trainable scalar alpha: the
    activation after the sum is removed, so the residual stream is the identity map; the
    layers are He-normal. Defaults: alpha = 0, mode = fan_in. Adds one parameter per residual
    branch. Bachlechner et al. 2021, "ReZero is All You Need: Fast Convergence at Large Depth"."""
    _he(weight, ctx, mode)
