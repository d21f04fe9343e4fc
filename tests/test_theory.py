"""Tests of the mean-field theory module against closed forms, published values and Monte Carlo.

The Monte Carlo estimates here are independent of the module: numpy closed forms of phi and
phi' (not the registry's torch modules), 1e6 samples with a fixed seed, the maps iterated on the
samples. Their standard errors are ~1e-3 relative, so agreement is asserted at 1%.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from initbench.models.activations import list_activations
from initbench.theory import MeanField, critical_line, critical_sigma_w2, mean_field

SELU_L, SELU_A = 1.0507009873554805, 1.6732632423543772


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# numpy closed forms: (phi, phi')
NUMPY = {
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "softsign": (lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2),
    "selu": (
        lambda x: SELU_L * np.where(x > 0, x, SELU_A * np.expm1(np.minimum(x, 0))),
        lambda x: SELU_L * np.where(x > 0, 1.0, SELU_A * np.exp(np.minimum(x, 0))),
    ),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
}
N_MC = 1_000_000


def monte_carlo(activation: str, sigma_w2: float, sigma_b2: float, iters: int = 40):
    """q* and chi1 by iterating the length map on fixed samples (numpy only)."""
    phi, dphi = NUMPY[activation]
    z = np.random.default_rng(0).standard_normal(N_MC)
    q = 1.0
    for _ in range(iters):
        q = sigma_w2 * np.mean(phi(math.sqrt(q) * z) ** 2) + sigma_b2
    return q, sigma_w2 * np.mean(dphi(math.sqrt(q) * z) ** 2)


def monte_carlo_correlation(activation: str, sigma_w2: float, sigma_b2: float, q: float):
    """c* and chi_c by iterating the correlation map at variance q on fixed sample pairs."""
    phi, dphi = NUMPY[activation]
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal(N_MC), rng.standard_normal(N_MC)
    u1 = math.sqrt(q) * z1
    c = 0.5
    for _ in range(40):
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
        c = min(1.0, (sigma_w2 * np.mean(phi(u1) * phi(u2)) + sigma_b2) / q)
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    return c, sigma_w2 * np.mean(dphi(u1) * dphi(u2))


def test_relu_critical_point_is_he_init() -> None:
    # He et al. 2015: sigma_w2 = 2 keeps the ReLU signal; chi1 = sigma_w2 / 2 at any q.
    assert critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, rel=1e-8)
    assert mean_field("relu", 2.0, 0.0).chi1 == pytest.approx(1.0, rel=1e-12)
    assert mean_field("relu", 1.0, 0.0).chi1 == pytest.approx(0.5, rel=1e-12)


def test_tanh_critical_point_without_bias_is_one() -> None:
    # Poole et al. 2016: without bias, tanh is ordered for sigma_w2 < 1 (q* = 0, chi1 = sigma_w2)
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, rel=1e-6)
    below = mean_field("tanh", 0.8, 0.0)
    assert below.q_star == 0.0 and below.regime == "vanishing"
    assert below.chi1 == pytest.approx(0.8, rel=1e-6)
    assert below.phase == "ordered"


def test_tanh_critical_point_at_sigma_b2_005_matches_schoenholz_and_monte_carlo() -> None:
    crit = critical_sigma_w2("tanh", 0.05)
    assert crit == pytest.approx(1.76, abs=0.01)  # Schoenholz et al. 2017, Fig. 1
    # independent check: the Monte Carlo chi1 crosses 1 between 0.98 and 1.02 times it
    assert monte_carlo("tanh", 0.98 * crit, 0.05)[1] < 1.0
    assert monte_carlo("tanh", 1.02 * crit, 0.05)[1] > 1.0
    at = mean_field("tanh", crit, 0.05)
    assert at.chi1 == pytest.approx(1.0, abs=1e-8)
    assert at.xi_c == math.inf and at.phase == "critical" and at.c_star == 1.0


@pytest.mark.parametrize(
    ("activation", "sigma_w2", "sigma_b2"),
    [
        ("tanh", 1.5, 0.05),
        ("tanh", 3.0, 0.3),
        ("relu", 1.5, 0.1),
        ("sigmoid", 4.0, 0.05),
        ("softsign", 2.0, 0.1),
        ("selu", 0.8, 0.05),
        ("silu", 2.0, 0.1),
    ],
)
def test_q_star_and_chi1_agree_with_monte_carlo(activation, sigma_w2, sigma_b2) -> None:
    mf = mean_field(activation, sigma_w2, sigma_b2)
    q, chi1 = monte_carlo(activation, sigma_w2, sigma_b2)
    assert mf.regime == "fixed_point"
    assert mf.q_star == pytest.approx(q, rel=0.01)
    assert mf.chi1 == pytest.approx(chi1, rel=0.01)


def test_chaotic_correlation_fixed_point_agrees_with_monte_carlo() -> None:
    mf = mean_field("tanh", 4.0, 0.05)  # deep in the chaotic phase: c* well below 1
    q, chi1 = monte_carlo("tanh", 4.0, 0.05)
    c, chi_c = monte_carlo_correlation("tanh", 4.0, 0.05, q)
    assert mf.phase == "chaotic" and chi1 > 1
    assert mf.c_star == pytest.approx(c, abs=0.01)
    assert mf.chi_c == pytest.approx(chi_c, rel=0.01)
    assert mf.chi_c < 1  # c* is stable
    assert mf.xi_c == pytest.approx(-1 / math.log(mf.chi_c))


def test_ordered_phase_has_c_star_one_and_xi_c_from_chi1() -> None:
    mf = mean_field("tanh", 1.0, 0.05)
    assert mf.c_star == 1.0 and mf.chi_c == mf.chi1 < 1
    assert mf.xi_c == pytest.approx(-1 / math.log(mf.chi1))
    assert mf.xi_q == pytest.approx(-1 / math.log(mf.q_slope))
    # the q map's slope: finite difference of the length map at q* (Schoenholz eq. for xi_q)
    phi = np.tanh
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / math.sqrt(2 * math.pi)

    def length_map(q: float) -> float:
        return 1.0 * float(np.sum(w * phi(math.sqrt(q) * z) ** 2)) + 0.05

    h = 1e-5
    slope = (length_map(mf.q_star + h) - length_map(mf.q_star - h)) / (2 * h)
    assert mf.q_slope == pytest.approx(slope, rel=1e-5)


def test_xi_c_diverges_at_the_transition() -> None:
    crit = critical_sigma_w2("tanh", 0.05)
    xis = [mean_field("tanh", crit * f, 0.05).xi_c for f in (0.7, 0.9, 0.99)]
    assert xis[0] < xis[1] < xis[2] and xis[2] > 50


def test_unbounded_and_vanishing_signals_are_reported() -> None:
    up = mean_field("relu", 3.0, 0.0)
    assert up.q_star == math.inf and up.regime == "exploding" and up.phase == "chaotic"
    assert up.chi1 == pytest.approx(1.5, rel=1e-12)
    down = mean_field("relu", 1.0, 0.0)
    assert down.q_star == 0.0 and down.regime == "vanishing"
    lin = mean_field("linear", 0.5, 0.1)  # q* = sigma_b2 / (1 - sigma_w2) in closed form
    assert lin.q_star == pytest.approx(0.2, rel=1e-10) and lin.chi1 == pytest.approx(0.5)


@pytest.mark.parametrize("activation", list_activations())
def test_every_activation_is_covered(activation: str) -> None:
    params = {"depth": 30} if activation == "tat" else {}  # TAT's slope is solved for a depth
    mf = mean_field(activation, 1.5, 0.05, **params)
    assert isinstance(mf, MeanField)
    assert mf.chi1 > 0 and 0 <= mf.c_star <= 1 and mf.xi_c > 0


def test_tat_needs_the_depth_it_is_solved_for() -> None:
    with pytest.raises(ValueError, match="activation=tat: its slope is solved for the network's"):
        mean_field("tat", 1.0, 0.0)
    # chi1 = sigma_w2 E[phi'(z)^2] = sigma_w2 scale^2 (1 + a^2) / 2 = sigma_w2: TAT with
    # weights of variance 1/fan_in and no bias sits at the edge of chaos by construction
    assert mean_field("tat", 1.0, 0.0, depth=30).chi1 == pytest.approx(1.0, rel=1e-6)
    assert mean_field("tat", 2.0, 0.0, depth=30).chi1 == pytest.approx(2.0, rel=1e-6)


def test_activation_params_are_passed_on() -> None:
    # leaky relu with slope a: chi1 = sigma_w2 (1 + a^2) / 2, critical at 2 / (1 + a^2)
    assert critical_sigma_w2("leaky_relu", 0.0, negative_slope=0.5) == pytest.approx(1.6)
    assert mean_field("leaky_relu", 1.0, 0.1, negative_slope=0.5).chi1 == pytest.approx(0.625)


def test_critical_line_is_increasing_in_sigma_b2() -> None:
    line = critical_line("tanh", [0.0, 0.05, 0.5])
    assert line[0] == pytest.approx(1.0, rel=1e-6) and np.all(np.diff(line) > 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma_w2": 0.0}, r"sigma_w2 must be a finite number > 0 \(got 0.0\)"),
        ({"sigma_w2": float("nan")}, "sigma_w2 must be a finite number"),
        ({"sigma_b2": -0.1}, r"sigma_b2 must be a finite number >= 0 \(got -0.1\)"),
        ({"sigma_b2": "0.1"}, "sigma_b2 must be a finite number"),
        ({"activation": "relu6"}, "unknown activation 'relu6'"),
        ({"negative_slope": 0.1}, "does not take parameters"),
    ],
)
def test_bad_input_names_the_field(kwargs, match) -> None:
    args = {"activation": "tanh", "sigma_w2": 1.0, "sigma_b2": 0.05, **kwargs}
    with pytest.raises(ValueError, match=match):
        mean_field(**args)


def test_critical_sigma_w2_bad_input() -> None:
    with pytest.raises(ValueError, match="sigma_b2 must be a finite number >= 0"):
        critical_sigma_w2("tanh", -1.0)
