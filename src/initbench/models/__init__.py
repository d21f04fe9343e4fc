"""Models: any ``nn.Module`` class or factory, named in the config by ``_target_``.

``build_model(target, input_shape=..., num_classes=..., activation=..., **params)`` is the one
entry point. ``target`` is a dotted import path (``initbench.models.MLP``,
``mynets.TinyConvNet``), a class or function, or a shipped model's short name (``mlp``,
``cnn``). The convention: the builder gets ``params`` as keyword arguments, plus whichever of
these its signature names:

- ``input_shape``: one example's shape, ``(channels, height, width)`` or ``(features,)``;
- ``num_classes``: the width of the logits;
- ``activation``: a zero-argument callable that returns a fresh activation module (the
  ``activation`` group's; ``activation()`` once per place the network uses one).

``check_model_params`` validates the params against the builder's signature (and its
``config_fields``, where it declares them) before anything is built; ``model_size`` measures
the parameters and activations by building the model on the ``meta`` device (no memory) and
running one example through it there.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from initbench.models.activations import (
    activation_gain,
    get_activation,
    list_activations,
    make_activation,
    prepare_activations,
)
from initbench.models.cnn import PlainCNN
from initbench.models.mlp import MLP, activation_factory
from initbench.models.residual import Gate, ResidualBlock, ScalarBias, residual_blocks
from initbench.models.resnet import ResNet
from initbench.models.size import ModelSize

# Short names for the shipped models (the config uses their dotted paths).
SHIPPED: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "cnn": PlainCNN, "resnet": ResNet}
# Arguments the run supplies (from the dataset and the activation group), never the config.
SUPPLIED = ("input_shape", "num_classes", "activation")
# ... and never set in the model's config either (the activation group's parameters).
RESERVED = (*SUPPLIED, "activation_params")
# The most modules a model may register while its size is measured on the meta device (some
# seconds); a config past it is refused before anything real is built.
MAX_MODULES = 20_000

__all__ = [
    "MAX_MODULES",
    "Gate",
    "MLP",
    "ModelSize",
    "PlainCNN",
    "ResNet",
    "ResidualBlock",
    "ScalarBias",
    "activation_gain",
    "build_model",
    "build_on_meta",
    "check_model_params",
    "list_activations",
    "make_activation",
    "model_factory",
    "model_size",
    "prepare_activations",
    "residual_blocks",
]


def model_factory(target: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """The class or function ``target`` names (a dotted path, a short name, or itself).

    Raises:
        ValueError: it cannot be imported or is not callable; the message says how to make a
            module of one's own importable.
    """
    if callable(target):
        return target
    if not isinstance(target, str) or not target:
        raise ValueError(
            f"model._target_ must be the dotted path of an nn.Module class or factory, e.g. "
            f"mynets.TinyConvNet (got {target!r})"
        )
    if target in SHIPPED:
        return SHIPPED[target]
    hint = (
        f"a module of your own must be importable: run from its folder with PYTHONPATH=. "
        f"(e.g. PYTHONPATH=. python src/train.py model=custom model._target_={target})"
    )
    parts = target.split(".")
    if len(parts) < 2:
        raise ValueError(f"model._target_={target} is not a dotted path (module.Class); {hint}")
    for i in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module
        try:
            factory: Any = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError as err:
            if i == 1:
                raise ValueError(
                    f"model._target_={target} cannot be imported ({err}); {hint}"
                ) from None
    for j, name in enumerate(parts[i:], start=i):  # then attributes (Class, Class.factory)
        owner = ".".join(parts[:j])
        if not hasattr(factory, name):
            names = [n for n in dir(factory) if not n.startswith("_")]
            near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            mean = f"; did you mean {owner}.{near[0]}?" if near else ""
            raise ValueError(f"model._target_={target}: {owner} has no {name}{mean}")
        factory = getattr(factory, name)
    if not callable(factory):
        raise ValueError(f"model._target_={target} is not a class or function")
    return factory


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: take anything
        return {"kwargs": inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)}


def check_model_params(target: str | Callable[..., nn.Module], params: Mapping[str, Any]) -> None:
    """Refuse params the builder does not take (unless it takes ``**kwargs``), values outside
    its ``config_fields``, and a builder that needs an argument nobody gives.

    Raises:
        ValueError: names the field (``model.depth``) and what is valid.
    """
    factory = model_factory(target)
    signature = _parameters(factory)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.values())
    valid = [n for n, p in signature.items() if n not in RESERVED and p.kind in (
        p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
    for key in params:
        if key in RESERVED:
            raise ValueError(
                f"model.{key} is supplied by the run (the dataset and the activation group), "
                f"not set in the model's config"
            )
        if key not in valid and not takes_any:
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"did you mean model.{near[0]}? " if near else ""
            raise ValueError(
                f"model.{key} is not a config field; {hint}valid fields of model "
                f"({_label(factory)}): name, {', '.join(valid) or '(none)'}"
            )
    fields = getattr(factory, "config_fields", {})
    for key, value in params.items():
        if key in fields:
            fields[key].check(f"model.{key}", value)
    missing = [
        n
        for n, p in signature.items()
        if p.default is p.empty
        and n not in params
        and n not in SUPPLIED
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if missing:  # fmt: skip
        raise ValueError(f"{_label(factory)} needs model.{', model.'.join(missing)}")


def _label(factory: Callable[..., Any]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"


def build_model(
    target: str | Callable[..., nn.Module],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    activation: str | Callable[[], nn.Module] = "relu",
    activation_params: Mapping[str, Any] | None = None,
    **params: Any,
) -> nn.Module:
    """Build ``target`` for examples of ``input_shape`` and ``num_classes`` classes.

    ``activation``: a registry name (with ``activation_params``, e.g. ``negative_slope``) or a
    zero-argument callable returning a module; given as a factory to builders that take
    ``activation``. ``params``: the builder's own arguments (``depth=30``, ``width=64``).

    Raises:
        ValueError: an unknown target or argument, a value out of range, a shape the model
            cannot take; or the builder returned something other than an ``nn.Module``.
    """
    factory = model_factory(target)
    check_model_params(factory, params)
    if isinstance(activation, str):
        get_activation(activation)  # an unknown name fails here, whether or not it is used
    activation = activation_factory(activation, activation_params)
    signature = _parameters(factory)
    supplied = {"input_shape": tuple(input_shape), "num_classes": num_classes,
                "activation": activation}  # fmt: skip
    model = factory(**{k: v for k, v in supplied.items() if k in signature}, **params)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{_label(factory)} returned {type(model).__name__}, not an nn.Module")
    prepare_activations(model)  # TAT's slope, solved for this network's depth
    return model


class _TooManyModules(Exception):
    pass


def _largest(params: Mapping[str, Any]) -> str:
    """The model's largest integer arguments, ``model.depth=100000000``: what to reduce."""
    ints = [(v, k) for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool)]
    return ", ".join(f"model.{k}={v}" for v, k in sorted(ints, reverse=True)[:2]) or "the model"


def build_on_meta(
    target: str | Callable[..., nn.Module],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    activation: str | Callable[[], nn.Module] = "relu",
    activation_params: Mapping[str, Any] | None = None,
    adapt: Callable[[nn.Module], None] | None = None,
    **params: Any,
) -> nn.Module:
    """:func:`build_model` on the ``meta`` device: the model's structure, no memory allocated.
    ``adapt``: what an init scheme adds to the model (its scalars), applied there too.

    Raises:
        ValueError: what :func:`build_model` refuses; a model of more than
            :data:`MAX_MODULES` modules (building it would take minutes), stopped as it
            registers them; a tensor too big to exist (more than 2**63 elements).
    """
    count = 0

    def counter(module: nn.Module, name: str, submodule: nn.Module) -> None:
        nonlocal count
        count += 1
        if count > MAX_MODULES:
            raise _TooManyModules

    hook = torch.nn.modules.module.register_module_module_registration_hook(counter)
    try:
        with torch.device("meta"):
            model = build_model(
                target, input_shape=input_shape, num_classes=num_classes, activation=activation,
                activation_params=activation_params, **params,
            )  # fmt: skip
            if adapt is not None:
                adapt(model)
            return model
    except _TooManyModules:
        raise ValueError(
            f"the model has more than {MAX_MODULES} modules, too many to check that it fits in "
            f"memory (an untrainable size); reduce {_largest(params)}"
        ) from None
    except (RuntimeError, OverflowError) as err:  # e.g. a tensor of more than 2**63 elements
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"the model cannot be built at this size ({reason}); reduce {_largest(params)}"
        ) from None
    finally:
        hook.remove()


def model_size(
    target: str | Callable[..., nn.Module],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    adapt: Callable[[nn.Module], None] | None = None,
    **params: Any,
) -> ModelSize:
    """Parameters and per-example activations of ``build_model(target, ...)``, measured on the
    ``meta`` device: the model is built there (:func:`build_on_meta`, with what ``adapt``, an
    init scheme's structure, adds) and one training-mode
    forward pass of two examples counts the input and every leaf module's output that is new
    memory (not a view, as ``nn.Flatten``'s, nor its input, as ``nn.Identity``'s). The
    activation does not matter; ``params`` are the builder's.

    A model whose forward pass cannot run on meta tensors (data-dependent control flow) is
    counted by its parameters and input only.

    Raises:
        ValueError: what :func:`build_on_meta` refuses.
    """
    model = build_on_meta(
        target, input_shape=input_shape, num_classes=num_classes, adapt=adapt, **params
    )
    n_params = sum(p.numel() for p in model.parameters())
    sizes = [torch.Size(input_shape).numel()]

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output._is_view():
            return
        if not any(output is x for x in inputs):  # new memory
            sizes.append(output[0].numel())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        model.train()
        model(torch.empty(2, *input_shape, device="meta"))
    except Exception:
        sizes = sizes[:1]  # what cannot run on meta tensors: parameters and input only
    finally:
        for handle in handles:
            handle.remove()
    return ModelSize(n_params, sum(sizes), max(sizes))
