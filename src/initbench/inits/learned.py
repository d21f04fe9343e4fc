"""Learned schemes: a closed-form start, then scales tuned by gradient steps before training.

Both run on the device the model will train on, through the init API's data-dependent door
(``needs_data``): ``start`` names the closed-form scheme each layer is first drawn with (its
default hparams, on the CPU, from the run's seed), then the scheme adjusts one scale per weight
tensor. What they spend (forward and backward passes, seconds) is the init's cost in
summary.json (:func:`initbench.inits.init_module` measures it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .registry import InitContext, check_int, check_real, get_init, list_inits, register


def _check_start(value: Any) -> None:
    """``start``: a registered scheme that draws each layer alone (not data-dependent)."""
    closed_form = [n for n in list_inits() if not get_init(n).needs_data]
    try:
        scheme = get_init(value) if isinstance(value, str) else None
    except ValueError:
        scheme = None
    if scheme is None or scheme.needs_data:
        raise ValueError(
            f"start must name a closed-form scheme, one of {', '.join(closed_form)} (got {value!r})"
        )


def _start(weight: Tensor, ctx: InitContext, *, start: str, **_: Any) -> None:
    """Draw ``weight`` with the scheme ``start`` at its default hparams."""
    scheme = get_init(start)
    scheme.fn(weight, ctx, **{k: v for k, v in scheme.hparams.items() if k != "bias"})


def _logged(step: int, steps: int) -> bool:
    """Whether ``step`` is one of the about ten a learned scheme logs: every steps/10, and the
    last."""
    return step % max(1, steps // 10) == 0 or step == steps - 1


# ---- MetaInit ---------------------------------------------------------------------------------


def _check_metainit(hp: Mapping[str, Any]) -> None:
    _check_start(hp["start"])
    check_int("steps", hp["steps"], low=1)
    check_real("lr", hp["lr"], low=0, strict=True)
    check_real("momentum", hp["momentum"], low=0)
    check_real("eps", hp["eps"], low=0, strict=True)
    check_int("batch", hp["batch"], low=1)


def gradient_quotient(loss: Tensor, params: list[Tensor], eps: float) -> Tensor:
    """MetaInit's GradQuotient, GQ = mean_i |(g - Hg)_i / (g_i + eps sgn g_i) - 1| over every
    entry of ``params``, g = dL/dparams and Hg = d(|g|^2 / 2)/dparams the Hessian-gradient
    product; differentiable (built with ``create_graph``). Parameters the loss does not reach
    count with g = Hg = 0."""
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    half_norm = sum((g * g).sum() / 2 for g in grads)
    hg = torch.autograd.grad(half_norm, params, create_graph=True, allow_unused=True)
    hg = [torch.zeros_like(p) if h is None else h for h, p in zip(hg, params, strict=True)]
    total = sum(
        ((g - h) / (g + eps * (2 * (g >= 0).to(g.dtype) - 1).detach()) - 1).abs().sum()
        for g, h in zip(grads, hg, strict=True)
    )
    return total / sum(p.numel() for p in params)


@register(
    "metainit",
    hparams={
        "start": "kaiming_normal",
        "steps": 500,
        "lr": 0.1,
        "momentum": 0.9,
        "eps": 1e-5,
        "batch": 128,
    },  # fmt: skip
    needs_data=True,
    validate=_check_metainit,
    base=_start,
)
def metainit(
    module: nn.Module,
    layers: list[tuple[str, nn.Module]],
    ctx: InitContext,
    *,
    start: str,
    steps: int,
    lr: float,
    momentum: float,
    eps: float,
    batch: int,
) -> None:
    """Each layer drawn by ``start``, then every weight tensor's norm tuned so that the
    GradQuotient GQ = mean |(g - Hg)/(g + eps sgn g) - 1| (g the gradient, H the Hessian) falls:
    ``steps`` steps of signed momentum on each norm, m <- momentum m - lr sgn(<W, dGQ/dW>/|W|),
    W <- W (|W| + m)/|W|, each on a fresh batch of ``batch`` N(0, 1) inputs shaped like the
    training examples with random labels, in eval mode (no dropout). Defaults
    start = kaiming_normal, steps = 500, lr = 0.1, momentum = 0.9, eps = 1e-5, batch = 128;
    biases as the bias hparam says. Logs
    {step, gq} ten times. Dauphin & Schoenholz 2019, "MetaInit: Initializing learning by
    learning to initialize"."""
    module.eval()
    params = [p for p in module.parameters() if p.requires_grad]
    weights = [layer.weight for _, layer in layers]
    x0 = ctx.inputs
    with torch.no_grad():
        num_classes = int(module(x0[:1]).shape[-1])
    shape = (batch, *x0.shape[1:])
    norms = [float(w.detach().norm()) for w in weights]
    zero = [name for (name, _), n in zip(layers, norms, strict=True) if n == 0.0]
    if zero:
        raise ValueError(f"metainit: start={start!r} leaves layers {zero} at zero norm")
    memory = [0.0] * len(weights)
    for step in range(steps):
        x = torch.randn(shape, generator=ctx.generator).to(x0.device)
        y = torch.randint(num_classes, (batch,), generator=ctx.generator).to(x0.device)
        gq = gradient_quotient(ctx.loss_fn(module(x).float(), y), params, eps)
        grads = torch.autograd.grad(gq, weights)
        with torch.no_grad():
            for j, (w, g) in enumerate(zip(weights, grads, strict=True)):
                norm = w.norm()
                memory[j] = momentum * memory[j] - lr * float(torch.sign((w * g).sum() / norm))
                w.mul_((norm + memory[j]) / norm)
        if _logged(step, steps):
            ctx.log(step=step, gq=float(gq.detach()))


# ---- GradInit ---------------------------------------------------------------------------------

GRADINIT_ALGS = ("sgd", "adam")
# The scales' optimizer, as the authors' RescaleAdam: Adam on each scale, its gradient clipped.
BETAS, ADAM_EPS, GRAD_CLIP = (0.9, 0.999), 1e-8, 1.0


def _check_gradinit(hp: Mapping[str, Any]) -> None:
    _check_start(hp["start"])
    check_int("steps", hp["steps"], low=1)
    check_real("lr", hp["lr"], low=0, strict=True)
    check_real("eta", hp["eta"], low=0, strict=True)
    check_real("gamma", hp["gamma"], low=0, strict=True)
    check_int("batch", hp["batch"], low=2)
    check_real("min_scale", hp["min_scale"], low=0)
    if hp["alg"] not in GRADINIT_ALGS:
        raise ValueError(f"alg must be one of {', '.join(GRADINIT_ALGS)} (got {hp['alg']!r})")


class _RescaleAdam:
    """Adam on one scale per tensor, as GradInit's RescaleAdam: the gradient clipped to
    +-GRAD_CLIP, separate first moments for constraint and objective steps, one second moment,
    the scale floored at ``floor``."""

    def __init__(self, floors: list[float], lr: float) -> None:
        self.lr, self.floors = lr, floors
        n = len(floors)
        self.scales = [1.0] * n
        self.avg = {True: [0.0] * n, False: [0.0] * n}  # first moments by is_constraint
        self.steps = {True: 0, False: 0}
        self.avg_sq = [0.0] * n

    def step(self, grads: list[float], constraint: bool) -> None:
        (b1, b2), self.steps[constraint] = BETAS, self.steps[constraint] + 1
        correction1 = 1 - b1 ** self.steps[constraint]
        correction2 = 1 - b2 ** (self.steps[True] + self.steps[False])
        avg = self.avg[constraint]
        for i, g in enumerate(grads):
            g = max(-GRAD_CLIP, min(GRAD_CLIP, g))
            avg[i] = b1 * avg[i] + (1 - b1) * g
            self.avg_sq[i] = b2 * self.avg_sq[i] + (1 - b2) * g * g
            denom = (self.avg_sq[i] / correction2) ** 0.5 + ADAM_EPS
            self.scales[i] = max(self.scales[i] - self.lr / correction1 * avg[i] / denom,
                                 self.floors[i])  # fmt: skip


@register(
    "gradinit",
    hparams={
        "start": "kaiming_normal",
        "alg": "sgd",
        "steps": 390,
        "lr": 0.01,
        "eta": 0.1,
        "gamma": 1.0,
        "batch": 128,
        "min_scale": 0.01,
    },  # fmt: skip
    needs_data=True,
    validate=_check_gradinit,
    base=_start,
    examples=4096,
)
def gradinit(
    module: nn.Module,
    layers: list[tuple[str, nn.Module]],
    ctx: InitContext,
    *,
    start: str,
    alg: str,
    steps: int,
    lr: float,
    eta: float,
    gamma: float,
    batch: int,
    min_scale: float,
) -> None:
    """Each layer drawn by ``start``, then one scale per weight and per (non-zero) bias tensor
    learned so that the first step of the training optimizer does the most good: for
    ``steps`` steps, on a batch S of ``batch`` training examples, if |g(S)|_p > gamma (p = 1 for
    alg=adam, 2 for sgd) take a step that lowers |g|_p, else lower the loss after one look-ahead
    step, L(S'; theta - eta A[g]) / eta, with A[g] = sign(g) (adam) or g/|g|_2 (sgd) and S' half
    S, half new examples; the scales move by Adam (lr, gradient clipped at 1), weights' floored
    at min_scale, biases' at 0. Defaults start = kaiming_normal, alg = sgd, steps = 390,
    lr = 0.01, eta = 0.1, gamma = 1, batch = 128, min_scale = 0.01 (the authors' no-BN
    settings); batches come from 4096 training examples. Logs {step, loss, gnorm, constraint}
    ten times and the scales' range. Zhu et al. 2021, "GradInit: Learning to Initialize
    Neural Networks for Stable and Efficient Training"."""
    x, y = ctx.inputs, ctx.targets
    if y is None:
        raise ValueError("gradinit needs labelled training data (inputs, targets)")
    names, tensors, floors = [], [], []
    for name, layer in layers:
        for attr, floor in (("weight", min_scale), ("bias", 0.0)):
            tensor = getattr(layer, attr)
            if tensor is not None and float(tensor.detach().norm()) > 0:  # zero: nothing to scale
                names.append(f"{name}.{attr}" if name else attr)
                tensors.append(tensor.detach().clone())
                floors.append(floor)
    opt = _RescaleAdam(floors, lr)
    norms = _batch_statistics(module)
    n = x.shape[0]
    b = min(batch, n)
    try:
        for step in range(steps):
            perm = torch.randperm(n, generator=ctx.generator).to(x.device)
            first, second = perm[:b], torch.cat([perm[: b // 2], perm[n - (b - b // 2) :]])
            scales = [torch.tensor(s, device=x.device, requires_grad=True) for s in opt.scales]
            params = {k: s * t for k, s, t in zip(names, scales, tensors, strict=True)}
            loss = ctx.loss_fn(_call(module, params, x[first]), y[first])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            if alg == "adam":
                gnorm = sum(g.abs().sum() for g in grads)
            else:
                gnorm = torch.sqrt(sum((g * g).sum() for g in grads))
            constraint = float(gnorm.detach()) > gamma
            if constraint:
                objective = gnorm
            else:
                with torch.no_grad():
                    moves = [eta * (g.sign() if alg == "adam" else g / gnorm) for g in grads]
                ahead = {k: p - m for (k, p), m in zip(params.items(), moves, strict=True)}
                objective = ctx.loss_fn(_call(module, ahead, x[second]), y[second]) / eta
            grad_scales = torch.autograd.grad(objective, scales)
            opt.step([float(g) for g in grad_scales], constraint)
            if _logged(step, steps):
                ctx.log(step=step, loss=float(loss.detach()), gnorm=float(gnorm.detach()),
                        constraint=int(constraint))  # fmt: skip
    finally:
        for module_, tracked in norms.items():
            module_.track_running_stats = tracked
    with torch.no_grad():
        for k, s, t in zip(names, opt.scales, tensors, strict=True):
            module.get_parameter(k).copy_(s * t)
    ctx.log(min_scale=min(opt.scales), max_scale=max(opt.scales),
            constraint_steps=opt.steps[True], objective_steps=opt.steps[False])  # fmt: skip


def _call(module: nn.Module, params: dict[str, Tensor], x: Tensor) -> Tensor:
    return torch.func.functional_call(module, params, (x,), strict=False).float()


def _batch_statistics(module: nn.Module) -> dict[nn.Module, bool]:
    """Eval mode (no dropout), batch norm on batch statistics without updating its running
    ones (as the authors' set_bn_modes); returns what to restore."""
    module.eval()
    norms = {m: m.track_running_stats for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)}  # fmt: skip
    for m in norms:
        m.train()
        m.track_running_stats = False
    return norms
