"""``init_module``: apply a registered scheme to every Linear and Conv layer of a model."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from initbench.models.activations import activation_gain
from initbench.models.residual import LAYER_TYPES

from .registry import (
    SCHEME_BIAS,
    InitContext,
    LossFn,
    Scheme,
    check_bias,
    fan_in_and_fan_out,
    get_init,
)


def init_module(
    module: nn.Module,
    scheme: str,
    *,
    activation: str | nn.Module = "relu",
    data: Any = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    loss_fn: LossFn = F.cross_entropy,
    **hparams: Any,
) -> list[dict[str, Any]] | None:
    """Initialize, in place, the weight and bias of every Linear and Conv1d/2d/3d in ``module``,
    in ``named_modules`` order.

    Args:
        module: the model (or a single layer), on the CPU where the weights are drawn.
        scheme: a name from ``list_inits()`` or an alias from ``list_aliases()``.
        activation: the model's activation, a registry name or module (``nn.LeakyReLU(0.2)``
            gives its slope); sets the gain of kaiming and of ``gain: auto``.
        data: a training batch, ``(inputs, targets)`` (or inputs alone where the scheme needs no
            labels), for data-dependent schemes; ignored by the others.
        generator: every random draw goes through it, so one seed gives one set of weights.
        device: where the model will train. A data-dependent scheme runs there, after its base
            draw: ``module`` and the batch are moved to it first (the others ignore it).
        loss_fn: the training loss ``loss_fn(logits, targets)`` (data-dependent schemes).
        **hparams: the scheme's hparams (see ``get_init(scheme).hparams``), ``bias`` included:
            zeros | default (torch's U(+-1/sqrt(fan_in))) | a constant.

    A scheme for residual networks (``fixup``, ``skipinit``, ``rezero``) first adds its scalar
    multipliers and biases to the model's :class:`~initbench.models.ResidualBlock` s (once; a
    second call resets them): build the optimizer after ``init_module``.

    Returns:
        A data-dependent scheme's log (the rows it recorded with ``ctx.log``: lsuv's
        {layer, iterations, final_var} per layer); None for the others.

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

    if entry.structure is not None:  # before the backup: what it adds is reset, not restored
        with torch.no_grad():
            entry.structure(module, **hp)
    ctx = InitContext(gain, generator, module, num_layers=len(layers), loss_fn=loss_fn)
    bias = hp.pop("bias")
    params = [p for _, layer in layers for p in (layer.weight, layer.bias) if p is not None]
    backup = [p.detach().clone() for p in params]
    draw = entry.base if entry.needs_data else entry.fn
    try:
        with torch.no_grad():
            for index, (name, layer) in enumerate(layers):  # weight then bias: nn.Linear's order
                if draw is not None:
                    draw(layer.weight, ctx.layer(index, name), **hp)
                _init_bias(layer, bias, ctx.layer(index, name), entry, hp)
        if not entry.needs_data:
            return None
        return _run_data_dependent(entry, module, layers, ctx, data, device, hp)
    except Exception:
        # A failure part-way (e.g. a batch the model cannot run) leaves the model as it was.
        with torch.no_grad():
            for p, saved in zip(params, backup, strict=True):
                p.copy_(saved)
        raise


def _run_data_dependent(
    entry: Scheme,
    module: nn.Module,
    layers: list[tuple[str, nn.Module]],
    ctx: InitContext,
    data: Any,
    device: torch.device | str | None,
    hp: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Move the model and the batch to ``device`` and run the scheme there, autograd on; the
    model's train/eval modes and ``requires_grad`` flags are as they were afterwards, and no
    gradient is left behind."""
    inputs, targets = data if isinstance(data, (tuple, list)) else (data, None)
    if not isinstance(inputs, Tensor) or not (targets is None or isinstance(targets, Tensor)):
        raise ValueError(
            f"init {entry.name!r} needs a tensor batch or an (inputs, targets) pair of tensors, "
            f"got {type(data).__name__}"
        )
    target = torch.device(device) if device is not None else _device_of(module)
    module.to(target)
    ctx = replace(
        ctx, device=target, inputs=inputs.to(target),
        targets=None if targets is None else targets.to(target),
    )  # fmt: skip
    modes = {m: m.training for m in module.modules()}
    flags = {p: p.requires_grad for p in module.parameters()}
    try:
        with torch.enable_grad():
            entry.fn(module, layers, ctx, **hp)
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
    return ctx.records


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def structure_of(scheme: str, **hparams: Any) -> Callable[[nn.Module], None] | None:
    """What ``scheme`` adds to a model before it draws (Fixup's, SkipInit's and ReZero's
    scalars), as a function of the model, or None for a scheme that adds nothing.

    Raises:
        ValueError: unknown scheme or hparam, or an out-of-range value.
    """
    entry = get_init(scheme)
    if entry.structure is None:
        return None
    structure, hp = entry.structure, _checked_hparams(entry, scheme, hparams)

    def adapt(model: nn.Module) -> None:
        with torch.no_grad():
            structure(model, **hp)

    return adapt


def structure_scheme(scheme: Any) -> str | None:
    """The canonical name of ``scheme`` when it changes the model's structure (``fixup``,
    ``skipinit``, ``rezero``): models initialized by different ones cannot be stacked in one
    pack. None for a scheme that adds nothing, and for a name that is not a scheme (the run
    itself refuses it)."""
    try:
        entry = get_init(str(scheme))
    except ValueError:
        return None
    return entry.name if entry.structure is not None else None


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


@dataclass
class InitCost:
    """What an initialization spent before training: wall seconds, and the forward and backward
    passes it ran through the model (a backward pass is a gradient computation that reached the
    model's output: MetaInit's second-order steps count three per step)."""

    seconds: float = 0.0
    forward_passes: int = 0
    backward_passes: int = 0
    device: str = "cpu"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def measure_cost(module: nn.Module, device: torch.device | str) -> Iterator[InitCost]:
    """Count the passes through ``module`` and time the block (CUDA synchronized at both ends),
    into the :class:`InitCost` it yields."""
    cost = InitCost(device=str(device))

    def backward(_grad: Tensor) -> None:
        cost.backward_passes += 1

    def forward(_module: nn.Module, _inputs: Any, output: Any) -> None:
        cost.forward_passes += 1
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(backward)

    cuda = torch.device(device).type == "cuda"
    handle = module.register_forward_hook(forward)
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield cost
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        cost.seconds = time.perf_counter() - start
        handle.remove()
