"""Singular values of a model's input-output Jacobian at initialization.

J = d logits / d input (the input flattened) at one example. Its singular values say how the
net stretches input perturbations: all equal to 1 is *dynamical isometry*, which an orthogonal
deep linear net has exactly and which makes deep nets trainable fast (Saxe et al. 2014;
Pennington, Schoenholz & Ganguli 2017, "Resurrecting the sigmoid in deep learning through
dynamical isometry"). A Gaussian net's spectrum spreads with depth; a ReLU net's too.

Two methods, both per example (the model runs one example at a time, in eval mode: dropout
off, batch norm on its running statistics):

- ``exact``: the full Jacobian by ``torch.func.jacrev`` (one backward pass per logit) or
  ``jacfwd`` (one forward-mode pass per input dimension), whichever side is smaller, then
  ``torch.linalg.svdvals``. Used when that side has at most :data:`MAX_EXACT` entries: every
  classifier here (its logits are few), MLP or CNN.
- ``lanczos``: the top ``k`` singular values by Lanczos iteration (full reorthogonalization) on
  J^T J, each product one ``torch.func.jvp`` and one ``vjp``; a randomized estimate (random
  start vector from ``generator``), exact once the iterations exceed the rank of J.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

MAX_EXACT = 1024  # the exact method when min(logits, input size) is at most this
METHODS = ("auto", "exact", "lanczos")


def _per_example(model: nn.Module, shape: tuple[int, ...]):
    def f(v: Tensor) -> Tensor:
        return model(v.reshape(1, *shape)).reshape(-1)

    return f


def _exact(f, v: Tensor, out_dim: int) -> Tensor:
    jac = torch.func.jacrev(f)(v) if out_dim <= v.numel() else torch.func.jacfwd(f)(v)
    jac = jac.detach().double()
    if not torch.isfinite(jac).all():  # overflowed weights or activations: nothing to measure
        return torch.full((min(jac.shape),), math.nan, dtype=torch.float64)
    return torch.linalg.svdvals(jac)


def _lanczos(f, v: Tensor, k: int, steps: int, generator: torch.Generator | None) -> Tensor:
    """Top-k singular values of J = df/dv by Lanczos on J^T J."""
    _, vjp_fn = torch.func.vjp(f, v)

    def gram(u: Tensor) -> Tensor:  # J^T J u
        _, ju = torch.func.jvp(f, (v,), (u.to(v.dtype),))
        return vjp_fn(ju)[0].detach().double()

    dim = v.numel()
    steps = min(steps, dim)
    q = torch.randn(dim, generator=generator, dtype=torch.float64)
    basis = [q / q.norm()]
    alphas, betas = [], []
    for j in range(steps):
        w = gram(basis[-1])
        if not torch.isfinite(w).all():  # overflowed weights or activations
            return torch.full((k,), math.nan, dtype=torch.float64)
        alphas.append(float(w @ basis[-1]))
        stack = torch.stack(basis)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - stack.T @ (stack @ w)
        beta = float(w.norm())
        if j == steps - 1 or beta <= 1e-10 * max(abs(a) for a in alphas):
            break  # the Krylov space is exhausted: the Ritz values are exact
        betas.append(beta)
        basis.append(w / beta)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(t).clamp_min(0.0).sqrt().flip(0)
    return ritz[:k]


def jacobian_singular_values(
    model: nn.Module,
    inputs: Tensor,
    *,
    method: str = "auto",
    k: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], str]:
    """Singular values (descending, float64) of d model(x) / d x for each x in ``inputs``.

    Args:
        model: any module mapping a batch of ``inputs.shape[1:]`` to logits.
        inputs: a batch (n, ...); the model's dtype and device.
        method: ``exact``, ``lanczos`` or ``auto`` (exact when min(logits, input size) <=
            MAX_EXACT, else Lanczos).
        k: how many of the largest singular values Lanczos estimates (it runs 2k + 10 steps).
        generator: Lanczos's random start vectors.

    Returns:
        (one tensor per example, the method used); NaN where the Jacobian is not finite.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (got {k!r})")
    shape = tuple(inputs.shape[1:])
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        f = _per_example(model, shape)
        with torch.no_grad():
            out_dim = model(inputs[:1]).numel()
        if method == "auto":
            method = "exact" if min(out_dim, math.prod(shape)) <= MAX_EXACT else "lanczos"
        values = []
        for x in inputs:
            v = x.reshape(-1).detach()
            if method == "exact":
                values.append(_exact(f, v, out_dim))
            else:
                values.append(_lanczos(f, v, min(k, out_dim, v.numel()), 2 * k + 10, generator))
    finally:
        for m, training in modes.items():
            m.train(training)
    return values, method


def spectrum_summary(values: list[Tensor], method: str) -> dict[str, Any]:
    """diagnose.json's ``jacobian`` entry: every singular value (descending) and summaries."""
    s = torch.cat(values).detach().sort(descending=True).values
    finite = s[torch.isfinite(s)]
    return {
        "singular_values": [float(v) for v in s],
        "mean_sq": float((finite**2).mean()) if finite.numel() else None,
        "max": float(finite.max()) if finite.numel() else None,
        "min": float(finite.min()) if finite.numel() else None,
        "method": method,
        "inputs": len(values),
        "per_input": len(values[0]) if values else 0,
        "nonfinite": int((~torch.isfinite(s)).sum()),
        "note": (
            "all singular values of d logits / d input"
            if method == "exact"
            else "Lanczos estimate of the largest singular values only (randomized)"
        ),
    }
