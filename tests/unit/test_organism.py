"""The model-organism checks (studies/organism.py): each bar decides on the right number, and the null law of the
neuron screen matches sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from posttrain_probe.results import RunResult
from posttrain_probe.studies import organism as O

CLASSES = ["first_subject", "middle_subject", "last_subject", "first_subsequent", "further", "last"]


def _tracing(mlp_ls: list[float], resid_ls: list[float], last: list[float]) -> dict:
    none = [None] * len(last)
    grid = {
        "resid": [[0.1] * len(last), none, resid_ls, [0.0] * len(last), none, last],
        "mlp": [[0.0] * len(last), none, mlp_ls, [0.0] * len(last), none, [0.0] * len(last)],
    }
    return {"token_classes": CLASSES, "n_layers": len(last), "aie": {"own": {"base": grid, "post": grid}}}


def test_tracing_needs_an_early_mlp_peak_and_resid_at_the_last_subject_token():
    last = [0.2, 0.3, 0.5, 0.6, 0.7, 0.8]
    ok = O.tracing_checks(_tracing([0.02, 0.12, 0.01, 0, 0, 0], [0.25, 0.22, 0.1, 0, 0, 0], last))
    assert ok["pass"] and ok["base"]["mlp_last_subject_peak_layer"] == 1
    assert ok["base"]["mlp_last_subject_share"] == pytest.approx(0.15)
    assert ok["base"]["resid_last_subject_early_share"] == pytest.approx(0.25 / 0.8)
    late_peak = O.tracing_checks(_tracing([0.0, 0.0, 0.0, 0.2, 0, 0], [0.25, 0.22, 0.1, 0, 0, 0], last))
    assert not late_peak["pass"]  # the MLP peak is in the upper half
    weak = O.tracing_checks(_tracing([0.07, 0.0, 0.0, 0, 0, 0], [0.25, 0.22, 0.1, 0, 0, 0], last))
    assert not weak["pass"]  # 0.07 / 0.8 < 10%
    no_resid = O.tracing_checks(_tracing([0.12, 0.0, 0.0, 0, 0, 0], [0.1, 0.1, 0.1, 0, 0, 0], last))
    assert not no_resid["pass"]  # 0.1 / 0.8 < 25%


def _refusal(base: float, ablated: float, harmless_ablated: float, added: float) -> dict:
    return {
        "refusal_rate": {
            "harmful.baseline": {"post": base},
            "harmful.ablation": {"post->post": ablated},
            "harmless.baseline": {"post": 0.0},
            "harmless.ablation": {"post->post": harmless_ablated},
            "harmless.addition": {"post->post": added},
        },
        "selected": {"post": {"layer": 2, "position_token": "\n", "passed_filters": True}},
    }


@pytest.mark.parametrize(
    ("rates", "ok"),
    [((1.0, 0.1, 0.0, 0.9), True), ((0.8, 0.1, 0.0, 0.9), False), ((1.0, 0.3, 0.0, 0.9), False),
     ((1.0, 0.1, 0.2, 0.9), False), ((1.0, 0.1, 0.0, 0.7), False)],
)  # fmt: skip
def test_refusal_bars(rates, ok):
    assert O.refusal_checks(_refusal(*rates))["pass"] is ok


def test_null_fraction_law_matches_random_directions():
    k, d = 13, 128
    mean, sd = O.null_fraction_law(k, d)
    u = np.random.default_rng(0).standard_normal((200_000, d))
    rho2 = (u[:, :k] ** 2).sum(1) / (u**2).sum(1)  # any fixed k-dim subspace: the law is rotation invariant
    assert rho2.mean() == pytest.approx(mean, rel=0.01) and rho2.std() == pytest.approx(sd, rel=0.02)


def _neurons(null_fracs: list[float], control_std: float) -> RunResult:
    screen = pd.DataFrame({"role": "base", "layer": 3, "neuron": range(len(null_fracs)), "null_frac": null_fracs})
    summary = {
        "layer": 3,
        "null_k": 13,
        "entropy_gap_post_minus_base": 0.05,
        "explained_share": {"null_own_total": {"share_both": 0.1, "control_share_both_std": control_std}},
    }
    return RunResult("neurons", {}, summary, tables={"screen": screen})


def test_neuron_check_counts_null_space_writers_beyond_three_sd_and_needs_tight_controls():
    mean, sd = O.null_fraction_law(13, 128)
    high = float(np.sqrt(mean + 3.5 * sd))
    typical = float(np.sqrt(mean))
    res = O.neuron_checks(_neurons([high] * 3 + [typical] * 100, 0.05), d_model=128)
    assert res["n_above_3sd"] == 3 and res["pass"]
    assert not O.neuron_checks(_neurons([high] * 2 + [typical] * 100, 0.05), d_model=128)["pass"]
    assert not O.neuron_checks(_neurons([high] * 3 + [typical] * 100, 0.2), d_model=128)["pass"]  # 1.96·0.2 > 0.2


def test_format_checks_says_which_mechanisms_hold_on_every_seed():
    seed0 = {"refusal": O.refusal_checks(_refusal(1.0, 0.1, 0.0, 0.9))}
    seed1 = {"refusal": O.refusal_checks(_refusal(1.0, 0.5, 0.0, 0.9))}
    text = O.format_checks({0: seed0, 1: seed1})
    assert "seed 0:" in text and "FAIL" in text and "0 of 1 mechanisms present on every seed (2 seeds)" in text
