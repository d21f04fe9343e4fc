"""``init_module``: apply a registered scheme to every Linear and Conv layer of a model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from initbench.models.activations import activation_gain

from .registry import (
    SCHEME_BIAS,
    InitContext,
    Scheme,
    check_bias,
    fan_in_and_fan_out,
    get_init,
)

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def init_module(
    module: nn.Module,
    scheme: str,
    *,
    activation: str | nn.Module = "relu",
    data: Any = None,
    generator: torch.Generator | None = None,
    **hparams: Any,
) -> Any:
    """Initialize, in place, the weight and bias of every Linear and Conv1d/2d/3d in ``module``.

    Args:
        module: the model (or a single layer).
        scheme: a name from ``list_inits()`` or an alias from ``list_aliases()``.
        activation: the model's activation, a registry name or module (``nn.LeakyReLU(0.2)``
            gives its slope); sets the gain of kaiming and of ``gain: auto``.
        data: a training batch (a tensor or an (inputs, targets) pair) for data-dependent
            schemes (lsuv); ignored by the others.
        generator: every random draw goes through it, so one seed gives one set of weights.
        **hparams: the scheme's hparams (see ``get_init(scheme).hparams``), ``bias`` included:
            zeros | default (torch's U(+-1/sqrt(fan_in))) | a constant.

    Returns:
        What the scheme measured (lsuv: a list of {layer, iterations, final_var}), or None.

    Raises:
        ValueError: unknown scheme, hparam or activation, an out-of-range hparam, missing
            data, or a layer shape the scheme cannot handle; raised before any weight changes.
    """
    entry = get_init(scheme)
    hp = _checked_hparams(entry, scheme, hparams)
    gain = activation_gain(activation)
    if entry.needs_data and data is None:
        raise ValueError(f"init {scheme!r} is data-dependent: pass a training batch as data=")
    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, LAYER_TYPES)]
    if not layers:
        raise ValueError(f"init {scheme!r}: {type(module).__name__} has no Linear or Conv layers")
    if entry.check_weight is not None:
        for name, layer in layers:
            try:
                entry.check_weight(layer.weight)
            except ValueError as err:
                raise ValueError(f"init {scheme!r}, layer {name or '<root>'!r}: {err}") from None

    ctx = InitContext(activation_gain=gain, generator=generator, data=data)
    bias = hp.pop("bias")
    params = [p for _, layer in layers for p in (layer.weight, layer.bias) if p is not None]
    backup = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            if entry.needs_data:  # the scheme runs the model, so biases are set first
                for _, layer in layers:
                    _init_bias(layer, bias, ctx, entry, hp)
                return entry.fn(module, layers, ctx, **hp)
            for _, layer in layers:  # weight then bias, the draw order of nn.Linear
                entry.fn(layer.weight, ctx, **hp)
                _init_bias(layer, bias, ctx, entry, hp)
            return None
    except Exception:
        # A failure part-way (e.g. a batch the model cannot run) leaves the model as it was.
        with torch.no_grad():
            for p, saved in zip(params, backup, strict=True):
                p.copy_(saved)
        raise


def check_init_params(scheme: str, **hparams: Any) -> dict[str, Any]:
    """Validate a scheme's name and hparams without touching a model; returns them with defaults.

    Raises:
        ValueError: unknown scheme or hparam, or an out-of-range value (names the field).
    """
    return _checked_hparams(get_init(scheme), scheme, hparams)


def _checked_hparams(entry: Scheme, scheme: str, hparams: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(hparams) - set(entry.hparams))
    if unknown:
        raise ValueError(
            f"init {scheme!r}: unknown hparams {unknown}; valid hparams: {', '.join(entry.hparams)}"
        )
    hp = {**entry.hparams, **hparams}
    try:
        validate_hparams(entry, hp)
    except ValueError as err:
        raise ValueError(f"init {scheme!r}: {err}") from None
    return hp


def validate_hparams(entry: Scheme, hp: Mapping[str, Any]) -> None:
    """Check a full set of hparams' values; ValueError names the hparam (``std must be ...``)."""
    if not (hp["bias"] == SCHEME_BIAS and entry.draw_bias is not None):
        check_bias(hp["bias"])
    if entry.validate is not None:
        entry.validate(hp)


def _init_bias(
    layer: nn.Module, bias: str | float, ctx: InitContext, entry: Scheme, hp: Mapping[str, Any]
) -> None:
    if layer.bias is None:
        return
    if bias == SCHEME_BIAS and entry.draw_bias is not None:
        entry.draw_bias(layer.bias, ctx, **hp)
    elif bias == "zeros":
        layer.bias.zero_()
    elif bias == "default":  # torch's reset_parameters: U(+-1/sqrt(fan_in))
        fan_in, _ = fan_in_and_fan_out(layer.weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        layer.bias.uniform_(-bound, bound, generator=ctx.generator)
    else:
        layer.bias.fill_(float(bias))
