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


def _fake_run(path, loss, n=12, seed=0):
    import json

    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"loss": {"name": loss}}))
    h = np.linspace(0.6, 0.1, n)
    rows = [
        {
            "step": i,
            "accuracy": float(-0.4 * np.exp(h[i]) + 1.2),
            "reward_mean": 0.5,
            "entropy_mean": float(h[i]),
            "dH_realized": float(-0.05 + rng.normal(0, 0.01)),
            "dH_pred_cov": (-0.04),
            "cov_mean": 0.01,
        }
        for i in range(n)
    ]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (path / "token_dumps").mkdir()
    B, T = 8, 5
    cov = rng.normal(size=(B, T))
    save_file(
        {
            "response_mask": np.ones((B, T), dtype=np.uint8),
            "advantage": rng.normal(size=(B, T)),
            "entropy_old": np.full((B, T), 0.5),
            "entropy_new": 0.5 - 0.1 * cov,  # realized ΔH = −0.1·Cov exactly
            "logp_old": np.log(rng.uniform(0.05, 0.95, size=(B, T))),
            "cov": cov,
            "prompt_index": np.repeat(np.arange(2), 4),
            "reward": np.array([1, 0, 1, 1, 0, 0, 0, 1], dtype=float),
        },
        str(path / "token_dumps" / "step_000010.safetensors"),
    )
    return path


def test_analyze_runs_reads_metrics_and_token_dumps(tmp_path):
    from posttrain_probe.analysis.dynamics import analyze_runs
    from posttrain_probe.plots.dynamics import save_figures
    from posttrain_probe.results import read_run, write_run

    runs = [_fake_run(tmp_path / "a", "grpo"), _fake_run(tmp_path / "b", "clip_cov", seed=1)]
    res = analyze_runs(runs)
    assert res.summary["grpo"]["law_a"] == pytest.approx(0.4) and res.summary["grpo"]["law_r2"] == pytest.approx(1.0)
    tok = res.tables["token_predictors"]
    assert tok[tok.predictor == "-cov"]["pearson"].iloc[0] == pytest.approx(1.0)
    assert set(res.tables["cov_by_difficulty"]["group_accuracy"]) <= {"0-25%", "25-50%", "50-75%", "75-100%"}
    back = read_run(write_run(tmp_path / "dyn", res))
    names = {p.stem for p in save_figures(back, tmp_path / "figs")}
    assert names == {"curves", "entropy_law", "predicted_vs_realized", "quadrants", "paired"}
    assert back.tables["paired"].set_index("arm").loc["clip_cov", "n_seeds"] == 1  # one seed: a point, no interval
    with pytest.raises(ValueError, match="no RLVR run"):
        analyze_runs([])
