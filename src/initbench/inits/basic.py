"""Data-free baselines: constants and plain (fan-independent) random distributions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .registry import InitContext, check_real, register


@register("zeros")
def zeros(weight: Tensor, ctx: InitContext) -> None:
    """W = 0. No defaults. Baseline: every unit computes the same thing, so symmetry is never
    broken (the "zeros" arm of the W&B FashionMNIST comparison)."""
    weight.zero_()


@register("ones")
def ones(weight: Tensor, ctx: InitContext) -> None:
    """W = 1. No defaults. Symmetric baseline like ``zeros``, with exploding activations."""
    weight.fill_(1.0)


def _check_constant(hp: Mapping[str, Any]) -> None:
    check_real("value", hp["value"])


@register("constant", hparams={"value": 0.1}, validate=_check_constant)
def constant(weight: Tensor, ctx: InitContext, *, value: float) -> None:
    """W = value. Default value = 0.1. Symmetric baseline (no paper)."""
    weight.fill_(float(value))


def _check_uniform(hp: Mapping[str, Any]) -> None:
    check_real("a", hp["a"])
    check_real("b", hp["b"])
    if hp["a"] > hp["b"]:
        raise ValueError(f"a must be <= b (got a={hp['a']!r}, b={hp['b']!r})")


@register("uniform", hparams={"a": 0.0, "b": 1.0}, validate=_check_uniform)
def uniform(weight: Tensor, ctx: InitContext, *, a: float, b: float) -> None:
    """W ~ U(a, b). Defaults a = 0, b = 1, as in the classic W&B FashionMNIST comparison."""
    weight.uniform_(float(a), float(b), generator=ctx.generator)


def _check_normal(hp: Mapping[str, Any]) -> None:
    check_real("mean", hp["mean"])
    check_real("std", hp["std"], low=0)


@register("normal", hparams={"mean": 0.0, "std": 0.01}, validate=_check_normal)
def normal(weight: Tensor, ctx: InitContext, *, mean: float, std: float) -> None:
    """W ~ N(mean, std^2). Defaults mean = 0, std = 0.01: the "small random" init (the
    sigma-grid experiments sweep std)."""
    weight.normal_(float(mean), float(std), generator=ctx.generator)
