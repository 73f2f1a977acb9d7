"""Entropy-dynamics analysis: law fit, extrapolation, predictor agreement, quadrants."""

from __future__ import annotations

import numpy as np
import pytest

from posttrain_probe.analysis.dynamics import (
    extrapolation_error,
    fit_entropy_law,
    predictor_agreement,
    quadrant_labels,
    quadrant_table,
    smooth,
)


def test_law_fit_recovers_known_parameters_exactly():
    h = np.linspace(0.05, 1.2, 40)
    r = -0.3 * np.exp(h) + 1.1
    fit = fit_entropy_law(h, r)
    assert fit.a == pytest.approx(0.3) and fit.b == pytest.approx(1.1) and fit.r2 == pytest.approx(1.0)
    assert fit.ceiling == pytest.approx(0.8)


def test_law_fit_with_noise_has_r2_below_one_and_extrapolates():
    rng = np.random.default_rng(0)
    h = np.linspace(1.0, 0.05, 100)  # entropy falls over training
    r = -0.5 * np.exp(h) + 1.4 + rng.normal(0, 0.01, size=h.shape)
    fit = fit_entropy_law(h, r)
    assert 0.9 < fit.r2 < 1.0
    ext = extrapolation_error(h, r, 0.25)
    assert ext["n_fit"] == 25 and ext["n_predicted"] == 75 and ext["mae"] < 0.05


def test_law_fit_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 3"):
        fit_entropy_law([0.1, np.nan, 0.2], [0.5, 0.4, np.nan])


def test_smooth_is_a_trailing_mean():
    np.testing.assert_allclose(smooth([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


def test_predictor_agreement_on_perfect_and_opposite_predictors():
    y = np.array([0.1, -0.2, 0.3, -0.05, 0.0, 0.2])
    perfect = predictor_agreement(y * 2, y)
    assert perfect["pearson"] == pytest.approx(1.0) and perfect["sign_agreement"] == 1.0
    opposite = predictor_agreement(-y, y)
    assert opposite["spearman"] == pytest.approx(-1.0) and opposite["sign_agreement"] == 0.0


def test_quadrants_follow_p_versus_exp_minus_entropy():
    p = np.array([0.9, 0.9, 0.01, 0.01, 0.5])
    h = np.array([1.0, 1.0, 1.0, 1.0, 1.0])  # e^-1 ≈ 0.37
    a = np.array([1.0, -1.0, 1.0, -1.0, 0.0])
    assert list(quadrant_labels(p, h, a)) == ["high_p/A+", "high_p/A-", "low_p/A+", "low_p/A-", ""]
    rows = {r["quadrant"]: r for r in quadrant_table(p, h, a, [-1, 1, 2, -3, 9])}
    assert rows["low_p/A-"]["mean_realized_dH"] == -3 and rows["high_p/A+"]["theory_sign"] == -1
