"""Truth directions, pure parts: probes against hand values and scikit-learn, NIE and prob-diff formulas,
splits, layer choice, prompts and answer tokens, statement loading, the reach note and the verdict text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from posttrain_probe.data import Statement
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.truth import (
    TruthConfig,
    choose_probe_layer,
    default_band,
    load_truth_statements,
)
from posttrain_probe.probes.truth.fit import (
    ProbeDataError,
    fit_logistic,
    fit_mass_mean,
    nie_summary,
    normalized_indirect_effect,
    prob_diff,
    stratified_split,
    truth_delta,
)
from posttrain_probe.probes.truth.model import (
    FewShotFormat,
    answer_token_ids,
    encode_with_spans,
    layer_sites,
    site_for_layer,
)
from posttrain_probe.stats import cosine
from posttrain_probe.testing import tiny_tokenizer

# ---------------------------------------------------------------------------------------------- probe math


def _planted(n=2000, d=32, gap=1.5, seed=0, u=None):
    rng = np.random.default_rng(seed)
    if u is None:
        u = rng.normal(size=d)
        u /= np.linalg.norm(u)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) + np.outer(2 * y - 1, gap * u) + 5.0  # offset: probes must not need centring
    return X, y, u


def test_difference_in_means_recovers_a_planted_direction():
    X, y, u = _planted()
    probe = fit_mass_mean(X, y)
    assert cosine(probe.direction, u) > 0.99
    Xt, yt, _ = _planted(seed=1, u=u)  # fresh noise, same direction: the threshold generalizes
    assert probe.accuracy(Xt, yt) > 0.9


def test_mass_mean_direction_and_threshold_match_hand_values():
    # true at (2, 1) ± (0, 1), false at (0, 1) ± (0, 1): μ_true − μ_false = (2, 0) → direction (1, 0);
    # the classes are mirror images, so the 1-D logistic threshold sits at the midpoint x = 1.
    X = np.array([[2, 0], [2, 2], [0, 0], [0, 2]], dtype=float)
    y = np.array([1, 1, 0, 0])
    probe = fit_mass_mean(X, y)
    np.testing.assert_allclose(probe.direction, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(probe.mu_true, [2.0, 1.0])
    np.testing.assert_allclose(probe.mu_false, [0.0, 1.0])
    threshold = -probe.intercept / (probe.coef @ probe.direction)
    assert threshold == pytest.approx(1.0, abs=1e-6)
    assert probe.accuracy(X, y) == 1.0
    np.testing.assert_allclose(probe.delta, [2.0, 0.0], atol=1e-12)


def test_mass_mean_threshold_equals_sklearn_on_the_projections():
    X, y, _ = _planted(n=300, d=8, gap=0.7, seed=3)
    probe = fit_mass_mean(X, y, C=0.3)
    d = (X[y == 1].mean(0) - X[y == 0].mean(0)) / np.linalg.norm(X[y == 1].mean(0) - X[y == 0].mean(0))
    s = X @ d
    z = ((s - s.mean()) / s.std())[:, None]
    ref = LogisticRegression(C=0.3, tol=1e-12, max_iter=100_000).fit(z, y)
    np.testing.assert_allclose(probe.decision(X), ref.decision_function(z), rtol=1e-6, atol=1e-6)


def test_logistic_probe_in_raw_space_equals_the_sklearn_pipeline():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 12)) * rng.uniform(0.5, 20, 12) + rng.normal(size=12) * 10
    y = (X @ rng.normal(size=12) + rng.normal(size=400) * 5 > np.median(X @ rng.normal(size=12))).astype(int)
    y[:2] = [0, 1]
    probe = fit_logistic(X, y, C=0.5)
    # the reference run to convergence (its default tol=1e-4 stops ~1e-3 short of the optimum our Newton reaches)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-12, max_iter=100_000)).fit(X, y)
    np.testing.assert_allclose(probe.decision(X), ref.decision_function(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(probe.direction, probe.coef / np.linalg.norm(probe.coef))
    assert probe.accuracy(X, y) == pytest.approx(ref.score(X, y))


def test_classes_that_do_not_differ_give_a_constant_probe_not_a_crash():
    X = np.ones((6, 4))  # e.g. the embedding of a shared final "." token
    y = np.array([1, 1, 1, 1, 0, 0])
    for fit in (fit_mass_mean, fit_logistic):
        probe = fit(X, y)
        assert not probe.direction.any() and not probe.delta.any()
        assert probe.accuracy(X, y) == pytest.approx(4 / 6)
        assert math.isnan(cosine(probe.direction, np.ones(4)))
        assert math.isnan(probe.auroc(X, y)) or probe.auroc(X, y) == 0.5


def test_probe_inputs_are_checked():
    with pytest.raises(ProbeDataError, match="both true and false"):
        fit_mass_mean(np.zeros((4, 2)), np.ones(4))
    with pytest.raises(ProbeDataError, match=r"\(N, D\)"):
        fit_logistic(np.zeros((2, 2, 2)), np.array([0, 1]))
    with pytest.raises(ProbeDataError, match="NaN"):
        fit_mass_mean(np.array([[np.nan, 0], [1, 1]]), np.array([0, 1]))


def test_truth_delta_is_the_mean_gap_along_the_direction():
    np.testing.assert_allclose(truth_delta(np.array([3.0, 4.0]), np.zeros(2), np.array([2.0, 0.0])), [3.0, 0])
    np.testing.assert_allclose(truth_delta(np.array([3.0, 4.0]), np.zeros(2), np.array([0.6, 0.8])), [3, 4])


def test_nie_formula_against_hand_computed_values():
    # true: pd 0.6, 0.2 (mean 0.4) → −0.2, 0.0 (mean −0.1): NIE = (−0.1 − 0.4) / (−1 − 0.4) = 5/14
    # false: pd −0.5, −0.3 (mean −0.4) → 0.3, 0.1 (mean 0.2): NIE = (0.2 + 0.4) / (1 + 0.4) = 3/7
    out = nie_summary([0.6, 0.2], [-0.2, 0.0], [-0.5, -0.3], [0.3, 0.1])
    assert out["nie_true_to_false"] == pytest.approx(5 / 14)
    assert out["nie_false_to_true"] == pytest.approx(3 / 7)
    assert out["nie_mean"] == pytest.approx((5 / 14 + 3 / 7) / 2)
    assert (out["n_true"], out["n_false"]) == (2, 2)
    assert normalized_indirect_effect(0.5, 1.0, 1.0) == 1.0  # all the way to TRUE
    assert normalized_indirect_effect(0.5, 0.5, -1.0) == 0.0
    assert math.isnan(normalized_indirect_effect(1.0, 0.3, 1.0))


def test_prob_diff_uses_the_full_softmax():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0]])  # softmax = (1/5, 3/5, 1/5)
    assert prob_diff(logits, 1, 0).item() == pytest.approx(0.4)
    assert prob_diff(logits, 0, 2).item() == pytest.approx(0.0)


def test_stratified_split_keeps_each_cell_balanced_and_is_seeded():
    labels = [1] * 10 + [0] * 10 + [1] * 5 + [0] * 5
    groups = ["a"] * 20 + ["b"] * 10
    m = stratified_split(labels, groups, 0.2, seed=0)
    lab, grp = np.array(labels), np.array(groups)
    assert [int(m[(grp == g) & (lab == c)].sum()) for g in "ab" for c in (1, 0)] == [2, 2, 1, 1]
    assert (stratified_split(labels, groups, 0.2, seed=0) == m).all()
    assert any((stratified_split(labels, groups, 0.2, seed=s) != m).any() for s in range(1, 5))


def test_probe_layer_choice_and_default_band():
    la = pd.DataFrame(
        dict(
            model=["base", "post"] * 4,
            probe="mass_mean",
            layer=[0, 0, 1, 1, 2, 2, 3, 3],
            test_acc=[1.0, 1.0, 0.6, 0.7, 0.9, 0.8, 0.95, 0.95],
        )
    )
    assert choose_probe_layer(la) == 2  # layers 0 (embeddings) and L = 3 excluded
    la.loc[la.layer == 1, "test_acc"] = la.loc[la.layer == 2, "test_acc"].to_numpy()
    assert choose_probe_layer(la) == 1  # tie 1 vs 2 → the earlier
    assert default_band(2, 4) == [1, 2]
    assert default_band(20, 32) == [17, 18, 19, 20]
    assert default_band(1, 4) == [1] and default_band(0, 4) == [0]


def test_config_errors_say_what_to_change():
    with pytest.raises(ValueError, match="test_frac"):
        TruthConfig(test_frac=1.0)
    with pytest.raises(ValueError, match="direction_probe"):
        TruthConfig(direction_probe="pca")
    with pytest.raises(ValueError, match="lower it"):
        TruthConfig(probe_layer=1, band_start=3)


def test_fewshot_prompt_and_statement_token_positions():
    fmt = FewShotFormat()
    content, span = fmt.build("one lives in river .", [("two lives in bread .", 1), ("six lives in a .", 0)])
    assert content == (
        "two lives in bread . This statement is: TRUE\nsix lives in a . This statement is: FALSE\n"
        "one lives in river . This statement is:"
    )
    assert content[span[0] : span[1]] == "one lives in river ."
    tok = tiny_tokenizer()
    ids, mask, pos = encode_with_spans(tok, [content, "one is ."], [span, (0, 8)], n_last=2)
    assert tok.convert_ids_to_tokens(ids[0, pos[0]].tolist()) == ["river", "."]
    assert tok.convert_ids_to_tokens(ids[1, pos[1]].tolist()) == ["is", "."]
    assert mask[1, pos[1, 1] + 1 :].sum() == 0  # right padding after the short row


def test_answer_tokens_are_first_tokens_and_must_differ():
    tok = tiny_tokenizer()
    ans = answer_token_ids(tok)
    assert (ans["true"]["token"], ans["false"]["token"]) == ("TRUE", "FALSE")
    with pytest.raises(ValueError, match="same token"):
        answer_token_ids(tok, " TRUE", " TRUE FALSE")
    assert layer_sites(2) == ["resid_pre.0", "resid_pre.1", "resid_post.1"]
    assert site_for_layer(2, 2) == "resid_post.1"


def test_statements_from_the_shared_truth_sets_load_with_unique_dataset_names(tmp_path):
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is absent (set POSTTRAIN_PROBE_DATA to the shared data folder)")
    got = load_truth_statements([data / "geometry_of_truth", data / "truth_is_universal"])
    names = {s.dataset for s in got}
    assert {"cities", "neg_cities", "larger_than", "animal_class", "neg_facts"} <= names and len(names) == 14
    # the same dataset name from two sources is qualified by its folder, so LODO keeps them apart
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "animal_class.csv").write_bytes(
            (data / "truth_is_universal" / "animal_class.csv").read_bytes()
        )
    twice = load_truth_statements([tmp_path / "x", tmp_path / "y"])
    assert {s.dataset for s in twice} == {"x/animal_class", "y/animal_class"}


def test_a_family_column_names_the_datasets_like_the_toy_world_csv(tmp_path):
    csv = tmp_path / "statements.csv"
    csv.write_text("statement,label,family,split\none is .,1,comparison,train\ntwo is .,0,fact,heldout\n")
    assert [s.dataset for s in load_truth_statements([csv])] == ["comparison", "fact"]
    assert [s.dataset for s in load_truth_statements([csv], dataset_column=None)] == ["statements"] * 2


def test_intervention_statements_are_split_equally_over_datasets_and_classes():
    from posttrain_probe.probes.truth.tables import intervention_rows

    st = [Statement(f"s{i}", i % 2, "big") for i in range(40)] + [Statement(f"t{i}", i % 2, "small") for i in range(8)]
    test = np.ones(len(st), dtype=bool)
    rows = intervention_rows(st, test, {"big": [], "small": []}, TruthConfig(n_intervene=8))
    got = [(st[i].dataset, st[i].label) for i in rows]
    assert sorted(got) == sorted([(d, y) for d in ("big", "small") for y in (1, 1, 0, 0)])
    only_big = intervention_rows(st, test, {"big": []}, TruthConfig(n_intervene=8))  # no shots for "small"
    assert len(only_big) == 8 and all(st[i].dataset == "big" for i in only_big)


def test_matched_pairs_need_equal_length_positions_and_group():
    from posttrain_probe.probes.truth.reach import matched_pairs

    pos = torch.tensor([[3, 4], [3, 4], [5, 6], [3, 4], [3, 4]])
    got = matched_pairs([1, 0, 0, 1, 0], ["a"] * 5, [0.5, -0.5, -0.5, 0.5, 0.2], [6, 6, 8, 6, 6], pos, 10)
    assert got == [(0, 1)]  # row 2: other length; row 4: judged wrongly (pd > 0 on a false statement)
    assert matched_pairs([1, 0, 1, 0], ["a"] * 4, [1, -1, 1, -1], [6] * 4, pos[:4] * 0, 1) == [(0, 1)]


def test_reach_note_names_the_null_as_a_property_of_the_model_only_with_the_evidence():
    from posttrain_probe.probes.truth.reach import reach_note

    reach = {
        "n_pairs": 32,
        "band": [2, 3],
        "n_last": 2,
        "band_cells_share": -5e-5,
        "last_position_share": [0.0, 0.0, 0.32, 0.79, 1.0],
    }
    note = reach_note("base", reach, own_nie=8.5e-5)
    assert "property of the model" in note and "0.000 of the P(TRUE)" in note and "resid[2..3]" in note
    assert "0.00/0.00/0.32/0.79/1.00" in note and "last position already carries 0.79" in note
    assert reach_note("base", reach, own_nie=0.3) is None  # the intervention works: nothing to explain
    assert reach_note("base", reach | {"band_cells_share": 0.6}, own_nie=0.0) is None  # the cells matter
    assert reach_note("base", reach | {"n_pairs": 0}, own_nie=0.0) is None
    assert reach_note("base", reach, own_nie=float("nan")) is None


def test_truth_verdict_says_why_the_nie_is_null_when_the_reach_check_shows_it():
    from posttrain_probe.probes.truth.verdicts import verdicts as truth_verdicts
    from posttrain_probe.results import RunResult

    reach = {
        "n_pairs": 32,
        "band": [2, 3],
        "n_last": 2,
        "band_cells_share": 1e-4,
        "last_position_share": [0.0, 0.0, 0.3, 0.8, 1.0],
    }
    summary = {
        "probe_layer": 3,
        "cosine_at_probe_layer": {"mass_mean": 0.95},
        "test_acc_at_probe_layer": {"base.logistic": 0.9, "post.logistic": 0.9},
        "nie": {"base->base": 1e-4, "post->post": 3e-5, "base->post": -5e-5},
    }
    res = RunResult(analysis="truth", config={}, summary=summary, tables={}, tensors={})
    plain = truth_verdicts(res)[1]
    assert plain["verdict"] == "inconclusive" and "property of the model" not in plain["evidence"]
    res.summary["intervention_reach"] = {"base": reach, "post": reach}
    why = truth_verdicts(res)[1]
    assert why["verdict"] == "inconclusive" and "property of the model" in why["evidence"]
    assert "base 0.000, post 0.000" in why["evidence"]
    res.summary["intervention_reach"]["post"] = reach | {"band_cells_share": 0.5}
    assert "property of the model" not in truth_verdicts(res)[1]["evidence"]  # one model reads the cells
