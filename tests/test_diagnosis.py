"""The report's "why it fails" sentences (initbench.report.diagnosis): each cause from the layer
statistics a step-0 report records, and the outcome from the runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from initbench.report.diagnosis import fails, mean_field_text, step0_cause
from initbench.theory import mean_field


def layers(n=5, **columns):
    """``n`` layers (the last is the head) with healthy statistics, overridden by ``columns``
    (a list per key, one value per layer)."""
    base = {
        "depth": list(range(1, n + 1)),
        "name": [f"fc{i}" for i in range(1, n)] + ["head"],
        "weight_std": [0.1] * n,
        "fan_in": [100] * n,
        "act_std": [1.0] * n,
        "act_rms": [1.0] * n,
        "grad_std": [1e-3] * n,
        "dead_frac": [0.1] * (n - 1) + [np.nan],
        "saturated_frac": [np.nan] * n,
        "act_cos": [0.5] * (n - 1) + [np.nan],
        "nonfinite": [0] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_a_healthy_network_has_no_cause():
    assert step0_cause(layers()) is None


def test_constant_weights_are_symmetric_units():
    cause = step0_cause(layers(weight_std=[0.0] * 5, act_std=[0.0] * 5, grad_std=[0.0] * 5))
    assert cause.startswith("symmetric weights") and "activation std 0" in cause


@pytest.mark.parametrize(
    "rms, way, at, value",
    [([1.0, 0.5, 0.005, 1e-4, 1e-5], "vanish", "layer 3 (fc3)", "0.005"),
     ([5.0, 150.0, 3e3, 5e4, 1e6], "explode", "layer 2 (fc2)", "150")],
)  # fmt: skip
def test_activations_that_leave_the_band_name_the_layer_and_the_last_value(rms, way, at, value):
    cause = step0_cause(layers(act_rms=rms))
    assert cause.startswith(f"activations {way} with depth") and f"at {at} ({value}," in cause
    assert cause.endswith(f"is {rms[-1]:.3g} at the last layer")  # the head's output


def test_the_first_cause_is_named_in_order():
    bad = step0_cause(layers(nonfinite=[0, 0, 3, 5, 5], act_rms=[1, 200, np.inf, np.inf, np.inf]))
    assert bad == "the forward pass is not finite from layer 3 (fc3) on at step 0"
    dead = step0_cause(layers(dead_frac=[0.2, 0.7, 0.9, 0.95, np.nan]))
    assert dead == "dead units: 70% of the units at layer 2 (fc2) never fire at step 0"
    sat = step0_cause(layers(saturated_frac=[0.1, 0.2, 0.6, 0.8, np.nan]))
    assert sat.startswith("saturation: 60% of the units at layer 3 (fc3)")
    grads = step0_cause(layers(grad_std=[1e-9, 1e-7, 1e-5, 1e-4, 1e-3]))
    assert grads.startswith("gradients vanish before the first layer: std 1e-09 there")
    alike = step0_cause(layers(act_cos=[0.9, 0.99, 0.995, 0.999, np.nan]))
    assert alike.startswith("inputs mapped alike: cosine 0.999")


def test_the_mean_field_prediction_uses_the_measured_sigma_w2():
    # He normal in a ReLU net: weight std sqrt(2/fan_in), sigma_w2 = 2: the critical line
    he = layers(weight_std=[math.sqrt(2 / 100)] * 5)
    text = mean_field_text(he, "relu")
    assert "σ_w² = 2, σ_b² = 0" in text and f"χ₁ = {mean_field('relu', 2.0, 0.0).chi1:.3g}" in text
    big = mean_field_text(layers(weight_std=[10.0] * 5), "tanh")  # sigma_w2 = 1e4: chaotic
    assert "(chaotic)" in big
    assert mean_field_text(layers(weight_std=[0.0] * 5), "relu") is None  # no Gaussian weights


def test_fails_takes_stalled_diverged_and_trailing_schemes_not_ties():
    board = pd.DataFrame({
        "rank": [1, 2, 3, 4, 5],
        "scheme": ["a", "b", "c", "d", "e"],
        "runs": [3, 3, 3, 1, 3],
        "best_val_acc_mean": [0.90, 0.89, 0.70, 0.80, 0.50],
        "tied_with_best": [True, True, False, None, True],
        "stalled": [0, 0, 0, 0, 3],
        "diverged": [0, 0, 0, 0, 0],
    })  # fmt: skip
    assert list(fails(board)["scheme"]) == ["c", "d", "e"]
