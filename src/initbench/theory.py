"""Mean-field theory of signal propagation at initialization, next to what the runs measure.

A fully connected net with weights W_ij ~ N(0, sigma_w2 / fan_in) and biases b_i ~ N(0, sigma_b2)
(the ``mean_field`` initializer) has, in the wide limit, pre-activations that are Gaussian at
every layer. Their variance q and the correlation c between two inputs follow deterministic maps
(Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos";
Schoenholz et al. 2017, "Deep Information Propagation"), with z, z1, z2 ~ N(0, 1) independent:

    length map       q  <-  sigma_w2 * E[phi(sqrt(q) z)^2] + sigma_b2
    correlation map  c  <-  (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q*,
                     u1 = sqrt(q*) z1,  u2 = sqrt(q*) (c z1 + sqrt(1 - c^2) z2)
    chi1  = sigma_w2 * E[phi'(sqrt(q*) z)^2]           slope of the c map at c = 1 (Poole eq. 7)
    chi_c = sigma_w2 * E[phi'(u1) phi'(u2)] at c*      slope of the c map at its fixed point
    xi_q  = -1 / ln(chi1 + sigma_w2 * E[phi''(sqrt(q*) z) phi(sqrt(q*) z)])   (Schoenholz eq. 5)
    xi_c  = -1 / ln(chi_c)                                                   (Schoenholz eq. 9)

The argument of ``xi_q``'s logarithm is the slope of the length map at q* (Gaussian integration
by parts: d/dq E[phi(sqrt(q) z)^2] = E[phi'^2 + phi phi'']); ``xi_c`` is infinite at the
order-to-chaos transition chi1 = 1, and Schoenholz et al. find nets trainable up to depth
~6 xi_c.

Every expectation is deterministic Gaussian quadrature, no Monte Carlo. Gauss-Hermite (as in
:mod:`initbench.models.activations`) is exact for polynomials but converges slowly across a kink,
and relu, leaky_relu, selu and softsign have one at 0 (softsign's chi1 is 2% off with 100
Hermite nodes). So the 1-D rule is Gauss-Legendre on each half-line [0, 12] times the normal
density, and the 2-D rule is polar: Gauss-Legendre in the radius, and in the angle on each
sector between the rays where u1 = 0 or u2 = 0. Each piece is then smooth and converges
exponentially; the tests check the results against closed forms and 1e6-sample Monte Carlo.
phi is the activation registry's own torch module (:func:`initbench.models.make_activation`)
evaluated in float64, phi' and phi'' by autograd, so every registered activation is covered.

Fixed points. q* is the attracting fixed point the net reaches from q0 = 1: the map is iterated
to find which way q moves, then the fixed point is bracketed in that direction and bisected.
When no finite positive fixed point is reached, ``q_star`` is ``0.0`` (the signal vanishes, e.g.
tanh with sigma_w2 < 1 and no bias) or ``inf`` (it grows without bound, e.g. relu with
sigma_w2 > 2), ``regime`` says so, and the slopes are those of the limit (evaluated at q = 1e-20
or at the q where growth was detected; exact for relu and the linear map, whose slopes do not
depend on q). c* is 1 when that fixed point is stable (chi1 <= 1, the ordered phase) and else the
stable one below 1 (the chaotic phase), found by bisection.

API: :func:`mean_field` (all of the above as a frozen :class:`MeanField`) and
:func:`critical_sigma_w2` (the sigma_w2 with chi1 = 1 for a given sigma_b2, by bisection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from initbench.fields import Field
from initbench.models.activations import make_activation

NODES = 100  # Gauss-Legendre nodes per half-line
RADIAL_NODES = 48  # Gauss-Legendre nodes in the radius of the 2-D rule
ANGLE_NODES = 16  # Gauss-Legendre nodes per angular sector of the 2-D rule
Z_MAX = 12.0  # the rules stop at 12 standard deviations (the tail mass is ~1e-33)
Q_ZERO = 1e-12  # below this q the signal counts as vanished
Q_EVAL_ZERO = 1e-20  # where the slopes of a vanishing signal are evaluated
Q_INF = 1e12  # above this, a q still growing counts as unbounded
CRITICAL_TOL = 1e-9  # |chi - 1| below this counts as exactly critical
SIGMA_W2_MAX = 1e4  # the largest sigma_w2 critical_sigma_w2 searches


class NoTransition(ValueError):
    """chi1 stays on one side of 1 over the searched sigma_w2 range."""


@dataclass(frozen=True)
class MeanField:
    """The mean-field quantities of one (activation, sigma_w2, sigma_b2); see the module doc."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    q_star: float  # length fixed point; 0.0 (vanishes) or inf (unbounded) when there is none
    chi1: float  # sigma_w2 E[phi'(sqrt(q*) z)^2]; > 1 chaotic, < 1 ordered
    c_star: float  # correlation fixed point (1 in the ordered phase)
    chi_c: float  # sigma_w2 E[phi'(u1) phi'(u2)] at c*
    q_slope: float  # chi1 + sigma_w2 E[phi'' phi]: the length map's slope at q*
    xi_q: float  # -1 / ln(q_slope); inf where q_slope >= 1
    xi_c: float  # -1 / ln(chi_c); inf where chi_c >= 1 (critical)
    regime: str  # "fixed_point" | "vanishing" | "exploding"
    phase: str  # "ordered" (chi1 < 1) | "critical" | "chaotic" (chi1 > 1)


def _check_real(field: str, value: Any, *, low: float = 0, strict: bool = False) -> float:
    Field("real", low=None if low == -math.inf else low, low_open=strict).check(field, value)
    return float(value)


@cache
def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    """1-D rule: nodes and weights with sum(w f(x)) = E[f(z)], z ~ N(0, 1).

    Gauss-Legendre on [0, Z_MAX] times the normal density, mirrored to [-Z_MAX, 0]: every
    registered activation is smooth on each half-line, so each half converges exponentially,
    where Gauss-Hermite on the whole line converges only algebraically across a kink at 0
    (softsign's phi'^2 has a cusp there: 2% off with 100 Hermite nodes).
    """
    x, w = np.polynomial.legendre.leggauss(NODES)
    r = (x + 1) * Z_MAX / 2
    w = w * Z_MAX / 2 * np.exp(-(r**2) / 2) / math.sqrt(2 * math.pi)
    nodes, weights = np.concatenate([-r[::-1], r]), np.concatenate([w[::-1], w])
    return torch.as_tensor(nodes), torch.as_tensor(weights)


@cache
def _radial() -> tuple[torch.Tensor, torch.Tensor]:
    """Radial rule for the 2-D integrals: sum(w g(r)) = integral of r exp(-r^2/2) g(r) dr."""
    x, w = np.polynomial.legendre.leggauss(RADIAL_NODES)
    r = (x + 1) * Z_MAX / 2
    return torch.as_tensor(r), torch.as_tensor(w * Z_MAX / 2 * r * np.exp(-(r**2) / 2))


@cache
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _angular(kinks: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles in [0, 2 pi) and weights summing to 1: Gauss-Legendre on each sector between
    consecutive ``kinks`` (the rays where an integrand is not smooth)."""
    x, w = _legendre(ANGLE_NODES)
    cuts = sorted({k % (2 * math.pi) for k in kinks})
    cuts = [*cuts, cuts[0] + 2 * math.pi]
    thetas, weights = [], []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        if b - a < 1e-15:
            continue
        thetas.append((x + 1) * (b - a) / 2 + a)
        weights.append(w * (b - a) / 2 / (2 * math.pi))
    return torch.as_tensor(np.concatenate(thetas)), torch.as_tensor(np.concatenate(weights))


class _Phi:
    """phi, phi' and phi'' of one registered activation on float64 tensors."""

    def __init__(self, activation: str, params: dict[str, Any]) -> None:
        self.module = make_activation(activation, **params).double()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def derivatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """phi(x), phi'(x), phi''(x), elementwise, by autograd."""
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = self.module(x)
            (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
            if d1.requires_grad:
                (d2,) = torch.autograd.grad(d1.sum(), x, allow_unused=True)
            else:  # piecewise linear (relu, identity): phi'' = 0 almost everywhere
                d2 = None
        d2 = torch.zeros_like(x) if d2 is None else d2
        return y.detach(), d1.detach(), d2.detach()


def _second_moment(phi: _Phi, q: float) -> float:
    z, w = _grid()
    return float((w * phi(math.sqrt(q) * z) ** 2).sum())


def _length_map(phi: _Phi, q: float, sigma_w2: float, sigma_b2: float) -> float:
    return sigma_w2 * _second_moment(phi, q) + sigma_b2


def _q_fixed_point(phi: _Phi, sigma_w2: float, sigma_b2: float) -> tuple[float, float, str]:
    """(q*, q to evaluate the slopes at, regime) for the attractor reached from q0 = 1."""

    def g(q: float) -> float:
        return _length_map(phi, q, sigma_w2, sigma_b2) - q

    q = 1.0
    for _ in range(50):  # a few steps show which way q moves, and often converge
        nxt = _length_map(phi, q, sigma_w2, sigma_b2)
        if not math.isfinite(nxt):
            return math.inf, q, "exploding"
        if abs(nxt - q) <= 1e-14 * max(q, 1e-300):
            return nxt, nxt, "fixed_point"
        q = nxt
        if q > Q_INF:
            return math.inf, q, "exploding"
    if g(q) > 0:  # growing: bracket the next fixed point above q
        lo, hi = q, 2.0 * q
        while g(hi) > 0:
            lo, hi = hi, 2.0 * hi
            if hi > Q_INF:
                return math.inf, lo, "exploding"
    else:  # shrinking: bracket the next fixed point below q
        lo, hi = q / 2.0, q
        while g(lo) < 0:
            lo, hi = lo / 2.0, lo
            if lo < Q_ZERO:
                return 0.0, Q_EVAL_ZERO, "vanishing"
    # invariant: g(lo) >= 0 >= g(hi) (the attracting fixed point lies between)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if g(mid) > 0:
            lo = mid
        else:
            hi = mid
    q_star = 0.5 * (lo + hi)
    if q_star < Q_ZERO:
        return 0.0, Q_EVAL_ZERO, "vanishing"
    return q_star, q_star, "fixed_point"


def _pair_grid(q: float, c: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u1, u2, weights) of the 2-D rule for (u1, u2) of variance q and correlation c.

    Polar coordinates of (z1, z2), with the angular sectors cut where u1 = 0 or u2 = 0 (the
    kinks of relu, leaky_relu, selu, softsign), so each sector's integrand is smooth.
    """
    s = math.sqrt(max(0.0, 1.0 - c * c))
    kink2 = math.atan2(-c, s)  # u2 = 0 on the ray c cos(t) + s sin(t) = 0
    theta, wt = _angular([math.pi / 2, 3 * math.pi / 2, kink2, kink2 + math.pi])
    r, wr = _radial()
    z1 = r[None, :] * torch.cos(theta)[:, None]
    z2 = r[None, :] * torch.sin(theta)[:, None]
    return math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + s * z2), wt[:, None] * wr[None, :]


def _pair_mean(phi: _Phi, q: float, c: float) -> float:
    """E[phi(u1) phi(u2)]."""
    u1, u2, ww = _pair_grid(q, c)
    return float((ww * phi(u1) * phi(u2)).sum())


def _pair_slope(phi: _Phi, q: float, c: float) -> float:
    """E[phi'(u1) phi'(u2)]."""
    u1, u2, ww = _pair_grid(q, c)
    return float((ww * phi.derivatives(u1)[1] * phi.derivatives(u2)[1]).sum())


def _c_fixed_point(phi: _Phi, q: float, sigma_w2: float, sigma_b2: float, chi1: float) -> float:
    """The stable fixed point of the correlation map at variance q.

    The map is normalized by the next layer's variance (= q at a fixed point), so it stays the
    correlation map where q vanishes or grows; its slope at c = 1 is chi1 * q / norm.
    """
    norm = sigma_w2 * _second_moment(phi, q) + sigma_b2  # = q at a fixed point
    if chi1 * q / norm <= 1.0 + CRITICAL_TOL:
        return 1.0  # c = 1 is stable: the ordered phase (or the transition)

    def g(c: float) -> float:
        return (sigma_w2 * _pair_mean(phi, q, c) + sigma_b2) / norm - c

    # chi1 > 1: just below 1 the map pulls c down (g < 0); at c = 0 it is >= 0 for every
    # registered activation (E[phi(u1) phi(u2)] = E[phi]^2 >= 0 there), so a root lies between.
    hi = None
    for k in range(1, 13):
        if g(1.0 - 10.0**-k) < 0:
            hi = 1.0 - 10.0**-k
            break
    if hi is None:
        return 1.0
    lo = 0.0
    if g(lo) < 0:  # not expected; search the negative side for completeness
        lo = -1.0
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        if g(mid) >= 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _depth_scale(slope: float) -> float:
    """-1/ln(slope): the depth over which a perturbation decays by e; inf when it does not."""
    if not math.isfinite(slope) or slope >= 1.0 - CRITICAL_TOL:
        return math.inf
    if slope <= 0.0:
        return 0.0
    return -1.0 / math.log(slope)


def _phase(chi1: float) -> str:
    if abs(chi1 - 1.0) <= 1e-6:
        return "critical"
    return "ordered" if chi1 < 1.0 else "chaotic"


def _phi(activation: str, params: dict[str, Any]) -> _Phi:
    if not isinstance(activation, str):
        raise ValueError(f"activation must be a registered activation name (got {activation!r})")
    for key, value in params.items():
        _check_real(key, value, low=-math.inf)
    if activation == "tat" and params.get("depth") is None:
        raise ValueError(
            "activation=tat: its slope is solved for the network's depth; pass depth=<number "
            "of TAT layers>"
        )
    return _Phi(activation, params)  # an unknown name or parameter raises ValueError


def _chi1(phi: _Phi, q: float, sigma_w2: float) -> float:
    z, w = _grid()
    _, d1, _ = phi.derivatives(math.sqrt(q) * z)
    return sigma_w2 * float((w * d1**2).sum())


def mean_field(
    activation: str, sigma_w2: float, sigma_b2: float, **activation_params: Any
) -> MeanField:
    """Fixed points, slopes and depth scales of a wide fully connected net at initialization.

    Args:
        activation: a registered activation (``initbench.models.list_activations()``).
        sigma_w2: weight variance times fan_in (> 0): W ~ N(0, sigma_w2 / fan_in).
        sigma_b2: bias variance (>= 0): b ~ N(0, sigma_b2).
        **activation_params: the activation's parameters (``negative_slope`` for leaky_relu).

    Returns:
        A :class:`MeanField` (q*, chi1, c*, chi_c, the length map's slope, xi_q, xi_c, regime,
        phase). Poole et al. 2016; Schoenholz et al. 2017, "Deep Information Propagation".

    Raises:
        ValueError: a non-finite or out-of-range sigma_w2 / sigma_b2, an unknown activation or
            activation parameter (the message names the field).
    """
    sigma_w2 = _check_real("sigma_w2", sigma_w2, strict=True)
    sigma_b2 = _check_real("sigma_b2", sigma_b2)
    phi = _phi(activation, activation_params)
    q_star, q_eval, regime = _q_fixed_point(phi, sigma_w2, sigma_b2)
    z, w = _grid()
    f, d1, d2 = phi.derivatives(math.sqrt(q_eval) * z)
    chi1 = sigma_w2 * float((w * d1**2).sum())
    q_slope = chi1 + sigma_w2 * float((w * d2 * f).sum())
    c_star = _c_fixed_point(phi, q_eval, sigma_w2, sigma_b2, chi1)
    chi_c = chi1 if c_star == 1.0 else sigma_w2 * _pair_slope(phi, q_eval, c_star)
    return MeanField(
        activation=activation,
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
        q_star=q_star,
        chi1=chi1,
        c_star=c_star,
        chi_c=chi_c,
        q_slope=q_slope,
        xi_q=_depth_scale(q_slope),
        xi_c=_depth_scale(chi_c),
        regime=regime,
        phase=_phase(chi1),
    )


def critical_sigma_w2(activation: str, sigma_b2: float, **activation_params: Any) -> float:
    """The sigma_w2 at which chi1 = 1 (the order-to-chaos transition) for this sigma_b2.

    chi1 grows with sigma_w2 for every registered activation, so the transition is bracketed by
    doubling from sigma_w2 = 1 and then bisected to a relative 1e-10. Examples: relu 2 and tanh 1
    at sigma_b2 = 0 (He et al. 2015; Poole et al. 2016); tanh ~1.76 at sigma_b2 = 0.05
    (Schoenholz et al. 2017, Fig. 1).

    Raises:
        ValueError: bad sigma_b2 or activation (names the field), or no transition for
            sigma_w2 up to 1e4 (chi1 < 1 throughout).
    """
    sigma_b2 = _check_real("sigma_b2", sigma_b2)
    phi = _phi(activation, activation_params)

    def excess(sigma_w2: float) -> float:
        _, q_eval, _ = _q_fixed_point(phi, sigma_w2, sigma_b2)
        return _chi1(phi, q_eval, sigma_w2) - 1.0

    lo, hi = 1.0, 1.0
    if excess(1.0) > 0:
        while excess(lo) > 0:
            lo, hi = lo / 2.0, lo
            if lo < 1e-8:
                raise NoTransition(f"{activation}: chi1 > 1 even as sigma_w2 -> 0; no transition")
    else:
        while excess(hi) <= 0:
            lo, hi = hi, 2.0 * hi
            if hi > SIGMA_W2_MAX:
                raise NoTransition(
                    f"{activation}: chi1 < 1 for every sigma_w2 up to {SIGMA_W2_MAX:g} at "
                    f"sigma_b2={sigma_b2!r}; no order-to-chaos transition"
                )
    while hi - lo > 1e-10 * hi:  # invariant: excess(lo) <= 0 < excess(hi)
        mid = 0.5 * (lo + hi)
        if excess(mid) > 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def critical_line(activation: str, sigma_b2_values: Any, **activation_params: Any) -> np.ndarray:
    """:func:`critical_sigma_w2` for each sigma_b2 (NaN where there is no transition): the
    chi1 = 1 line of the (sigma_w2, sigma_b2) phase diagram (Poole et al. 2016, Fig. 2)."""
    out = []
    for sigma_b2 in np.asarray(sigma_b2_values, dtype=np.float64).ravel():
        try:
            out.append(critical_sigma_w2(activation, float(sigma_b2), **activation_params))
        except NoTransition:
            out.append(math.nan)
    return np.array(out)
