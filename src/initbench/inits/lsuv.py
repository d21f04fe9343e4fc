"""Layer-sequential unit-variance (LSUV): a data-dependent scheme."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .registry import InitContext, check_int, check_real, register


def _check_lsuv(hp: Mapping[str, Any]) -> None:
    check_real("tol", hp["tol"], low=0, strict=True)
    check_int("max_iters", hp["max_iters"], low=1)


def _orthogonal(weight: Tensor, ctx: InitContext, **_: Any) -> None:
    """LSUV's pre-init: orthogonal, gain 1 (drawn on the CPU, like every closed-form scheme)."""
    nn.init.orthogonal_(weight, generator=ctx.generator)


@register(
    "lsuv",
    hparams={"tol": 0.1, "max_iters": 10},
    needs_data=True,
    validate=_check_lsuv,
    base=_orthogonal,
)
@torch.no_grad()
def lsuv(
    module: nn.Module,
    layers: list[tuple[str, nn.Module]],
    ctx: InitContext,
    *,
    tol: float,
    max_iters: int,
) -> None:
    """Orthogonal pre-init (gain 1), then layer by layer, in forward order, W <- W/sqrt(Var(out))
    on the batch until |Var(out) - 1| < tol or max_iters rescalings. Defaults tol = 0.1,
    max_iters = 10. Logs {layer, iterations, final_var} per layer. Mishkin & Matas 2016,
    "All you need is a good init"."""
    x = ctx.inputs
    names = {layer: name or type(layer).__name__ for name, layer in layers}
    outputs: dict[nn.Module, Tensor] = {}  # insertion order = forward order of first calls

    def record(layer: nn.Module, _inputs: Any, output: Tensor) -> None:
        outputs[layer] = output

    def output_var(layer: nn.Module) -> float:
        outputs.clear()
        module(x)
        return float(outputs[layer].float().var())

    handles = [layer.register_forward_hook(record) for _, layer in layers]
    try:
        module.eval()
        module(x)
        missing = [names[layer] for _, layer in layers if layer not in outputs]
        if missing:
            raise ValueError(f"lsuv: layers {missing} were not called in the forward pass")
        for layer in list(outputs):
            var = float(outputs[layer].float().var())
            iterations = 0
            while abs(var - 1.0) >= tol and iterations < max_iters:
                if not math.isfinite(var) or var <= 0.0:
                    raise ValueError(
                        f"lsuv: output variance of layer {names[layer]!r} is {var}; "
                        "cannot rescale it to 1"
                    )
                layer.weight.div_(math.sqrt(var))
                iterations += 1
                var = output_var(layer)
            ctx.log(layer=names[layer], iterations=iterations, final_var=var)
    finally:
        for handle in handles:
            handle.remove()
