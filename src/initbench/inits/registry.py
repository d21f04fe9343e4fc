"""The initializer registry: each scheme is one function registered under a canonical name.

A scheme function fills one weight tensor in place; its keyword-only parameters are its
hparams, and ``register`` records their defaults::

    @register("xavier_uniform", aliases=("xavier",), hparams={"gain": 1.0}, validate=...)
    def xavier_uniform(weight: Tensor, ctx: InitContext, *, gain: float | str) -> None: ...

Each call gets an :class:`InitContext`: the activation's gain, the generator, the model, and
the layer's qualified name and index (Fixup scales a layer by where it sits in its residual
branch). A scheme that needs more of the model than its layers registers a ``structure``
function, run first on the whole model: Fixup, SkipInit and ReZero add their scalar
multipliers and biases to the model's residual blocks there.

A data-dependent scheme (``needs_data=True``: LSUV, GradInit, MetaInit) is called once with
the whole model instead, as ``fn(module, layers, ctx, **hparams)``, after every layer was drawn
by its ``base`` (``base(weight, ctx, **hparams)``, on the CPU, like every closed-form draw) and
the model was moved to the device it will train on. Its context then also holds a training
batch with labels (``ctx.inputs``, ``ctx.targets``, on that device), the loss function
(``ctx.loss(model)``) and a logger (``ctx.log(...)``: one row of what it measured, which goes
to summary.json, diagnose.json and the sinks). It runs with autograd on, so it may take
gradient steps; wrap what needs none in ``torch.no_grad()``. Every scheme also takes ``bias``
(``zeros`` | ``default`` | a constant), which ``init_module`` applies. Adding a scheme is that
function plus ``conf/init/<name>.yaml``; the tests loop over ``list_inits()``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from initbench.fields import Field
from initbench.models.residual import branch_positions, residual_blocks

BIAS_POLICIES = ("zeros", "default")
SCHEME_BIAS = "normal"  # the scheme's own bias draw (Scheme.draw_bias), where it has one


LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class InitContext:
    """What a scheme may use besides its hparams.

    Per layer (closed-form schemes, and a data-dependent scheme's ``base``): ``name`` and
    ``index`` say which layer is drawn. A data-dependent scheme gets the whole model's context,
    ``name == ""``, with the batch, the loss and the logger.
    """

    activation_gain: float  # gain of the model's activation (initbench.models.activation_gain)
    generator: torch.Generator | None = None  # every random draw goes through it (a CPU one)
    model: nn.Module | None = None  # the model being initialized
    name: str = ""  # the layer's qualified name in model.named_modules() ("" for the model)
    index: int = 0  # position among the model's Linear/Conv layers, in named_modules order
    num_layers: int = 0  # how many Linear/Conv layers the model has
    # Data-dependent schemes only: a training batch and its labels, on ``device``.
    inputs: Tensor | None = None
    targets: Tensor | None = None
    device: torch.device | None = None  # where the model trains (and is, when the scheme runs)
    loss_fn: LossFn = F.cross_entropy  # the training loss: loss_fn(logits, targets)
    records: list[dict[str, Any]] = field(default_factory=list)  # what ``log`` collected
    # The model's residual branches, mapped once per init_module call (see ``branch``).
    _branches: dict[str, Any] = field(default_factory=dict, repr=False)

    def gain(self, gain: float | str) -> float:
        """Resolve a ``gain`` hparam: a number, or ``"auto"`` for the activation's gain."""
        return self.activation_gain if gain == "auto" else float(gain)

    def layer(self, index: int, name: str) -> InitContext:
        """This context for one layer (it shares ``records``)."""
        return replace(self, index=index, name=name, records=self.records,
                       _branches=self._branches)  # fmt: skip

    def branch(self) -> tuple[int, int, int] | None:
        """Where this layer sits in the model's residual branches: (its position in its
        branch, the branch's number of layers, the model's number of branches); None outside
        a branch. The model is walked once per init_module call, not once per layer."""
        if not self._branches:
            model = self.model if self.model is not None else nn.Module()
            self._branches.update(
                positions=branch_positions(model), count=len(residual_blocks(model))
            )
        where = self._branches["positions"].get(self.name)
        return None if where is None else (*where, self._branches["count"])

    def loss(self, model: nn.Module | None = None) -> Tensor:
        """The training loss of ``model`` (default: the model being initialized) on the batch."""
        if self.inputs is None or self.targets is None:
            raise ValueError("this scheme needs a training batch with labels (inputs, targets)")
        model = self.model if model is None else model
        return self.loss_fn(model(self.inputs).float(), self.targets)

    def log(self, **values: Any) -> None:
        """Record one row of what the scheme measured (numbers or short strings): it goes to
        summary.json's ``init_report``, diagnose.json's ``init`` and the sinks' ``init/log``."""
        self.records.append(values)


@dataclass(frozen=True)
class Scheme:
    """A registered initialization scheme."""

    name: str
    fn: Callable[..., Any]
    hparams: Mapping[str, Any]  # defaults, "bias" included; the valid hparam names
    aliases: tuple[str, ...] = ()
    needs_data: bool = False
    validate: Callable[[Mapping[str, Any]], None] | None = None  # raises ValueError
    check_weight: Callable[[Tensor], None] | None = None  # per-layer shape check
    # The scheme's own bias draw, ``draw_bias(bias, ctx, **hparams)``: what bias "normal" means
    # for it (mean_field: N(0, sigma_b2)). Schemes without one refuse bias "normal".
    draw_bias: Callable[..., None] | None = None
    # A data-dependent scheme's per-layer draw before it runs, ``base(weight, ctx, **hparams)``
    # (LSUV: orthogonal); None keeps the layers' weights as they are.
    base: Callable[..., None] | None = None
    examples: int = 256  # training examples a data-dependent scheme is handed (ctx.inputs)
    # A scheme that changes the model's structure (Fixup, SkipInit, ReZero: scalar multipliers
    # and biases on residual branches), ``structure(model, **hparams)``: adds what it needs
    # (once; a model already changed by it is left as is) and sets what it added to its initial
    # values. Run by init_module before any draw.
    structure: Callable[..., None] | None = None

    @property
    def doc(self) -> str:
        """The first paragraph of the scheme function's docstring, on one line."""
        paragraph = (self.fn.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(paragraph.split())


_SCHEMES: dict[str, Scheme] = {}
_ALIASES: dict[str, str] = {}


def register(
    name: str,
    *,
    hparams: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = (),
    needs_data: bool = False,
    bias: str | float = "zeros",
    validate: Callable[[Mapping[str, Any]], None] | None = None,
    check_weight: Callable[[Tensor], None] | None = None,
    draw_bias: Callable[..., None] | None = None,
    base: Callable[..., None] | None = None,
    examples: int = 256,
    structure: Callable[..., None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a scheme to the registry; ``hparams`` maps each hparam to its default.
    ``base`` (data-dependent schemes only) draws each layer before the scheme runs;
    ``examples``: how many training examples a data-dependent scheme is handed;
    ``structure``: what the scheme adds to the model before it draws (see :class:`Scheme`)."""
    if base is not None and not needs_data:
        raise ValueError(f"init {name!r}: only a data-dependent scheme (needs_data) has a base")
    hparams = dict(hparams or {})

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        for key in (name, *aliases):
            if key in _SCHEMES or key in _ALIASES:
                raise ValueError(f"init scheme name {key!r} is already registered")
        params = inspect.signature(fn).parameters.values()
        keyword_only = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if keyword_only != set(hparams):
            raise ValueError(
                f"init {name!r}: hparams {sorted(hparams)} must match the keyword-only "
                f"parameters of {fn.__name__}: {sorted(keyword_only)}"
            )
        defaults = MappingProxyType({**hparams, "bias": bias})
        _SCHEMES[name] = Scheme(
            name, fn, defaults, tuple(aliases), needs_data, validate, check_weight, draw_bias,
            base, examples, structure,
        )  # fmt: skip
        _ALIASES.update(dict.fromkeys(aliases, name))
        return fn

    return decorator


def unregister(name: str) -> None:
    """Remove a scheme and its aliases (a scheme registered for one test or notebook cell)."""
    scheme = _SCHEMES.pop(resolve(name))
    for alias in scheme.aliases:
        _ALIASES.pop(alias, None)


def list_inits() -> list[str]:
    """Canonical scheme names, sorted (aliases not included)."""
    return sorted(_SCHEMES)


def list_aliases() -> dict[str, str]:
    """Alias -> canonical scheme name."""
    return dict(sorted(_ALIASES.items()))


def resolve(name: str) -> str:
    """The canonical name of ``name`` (a canonical name or an alias)."""
    if name in _SCHEMES:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise ValueError(
        f"unknown init scheme {name!r}; valid schemes: {', '.join(list_inits())}; "
        f"aliases: {', '.join(list_aliases())}"
    )


def get_init(name: str) -> Scheme:
    """The registered scheme ``name`` (a canonical name or an alias)."""
    return _SCHEMES[resolve(name)]


def fan_in_and_fan_out(weight: Tensor) -> tuple[int, int]:
    """Fans as torch computes them: (c_in * k..., c_out * k...) for a conv kernel."""
    if weight.dim() < 2:
        raise ValueError(f"fans need a weight with >= 2 dims, got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


# Validation helpers for the schemes' ``validate`` functions: each is one
# :class:`initbench.fields.Field` (the type the config, the datasets and the models use), so a
# message reads as the config's do, ``<field> must be <what is valid> (got <value>)``;
# init_module prefixes the scheme's name.


def check_real(field: str, value: Any, *, low: float | None = None, strict: bool = False) -> None:
    """``value`` is a finite real number (not a bool), >= low (> low if ``strict``)."""
    Field("real", low=low, low_open=strict).check(field, value)


def check_int(field: str, value: Any, *, low: int) -> None:
    """``value`` is an int (not a bool) >= low."""
    Field("int", low=low).check(field, value)


def check_choice(field: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` is one of ``choices``."""
    Field("choice", choices=tuple(choices)).check(field, value)


def check_bool(field: str, value: Any) -> None:
    """``value`` is true or false."""
    Field("bool").check(field, value)


def check_gain(value: Any) -> None:
    """A ``gain`` hparam: a number > 0, or "auto" for the activation's gain."""
    if value == "auto":
        return
    try:
        check_real("gain", value, low=0, strict=True)
    except ValueError:
        raise ValueError(f'gain must be a number > 0 or "auto" (got {value!r})') from None


def check_bias(value: Any) -> None:
    """The ``bias`` hparam: zeros | default | a constant."""
    if isinstance(value, str) and value in BIAS_POLICIES:
        return
    try:
        check_real("bias", value)
    except ValueError:
        raise ValueError(
            f"bias must be zeros, default (torch's U(+-1/sqrt(fan_in))) or a constant "
            f"(got {value!r})"
        ) from None
