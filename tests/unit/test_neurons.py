"""Entropy neurons, pure parts: weight screens and selection rules against hand-computed references,
controls, matching, next-token and ablation statistics, the explained share, text loading, config errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from posttrain_probe.data.defaults import shared_path
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.neurons import (
    NeuronsConfig,
    explained_share,
    load_texts,
    split_texts,
)
from posttrain_probe.probes.neurons.ablate import (
    AblationStats,
    next_token_stats,
)
from posttrain_probe.probes.neurons.screen import (
    NormFoldError,
    control_sets,
    iou,
    logit_var,
    match_neurons,
    matched_controls,
    norm_deciles,
    norm_linear_map,
    null_fraction,
    resolve_null_k,
    select_du,
    select_null,
    unembed_spectrum,
)


def make_gemma_norm(D):
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    norm = GemmaRMSNorm(D, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, D))
    return norm


def _fake_screen(norms, lvs, rhos):
    norms = np.asarray(norms, dtype=float)
    return pd.DataFrame(
        {
            "neuron": np.arange(len(norms)),
            "norm": norms,
            "logit_var": lvs,
            "null_frac": rhos,
            "norm_decile": norm_deciles(norms),
        }
    )


def test_logit_var_and_null_fraction_match_hand_computed_values():
    w_u = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # (D=3, V=3)
    w = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.0, 1.0]])
    # cos with the columns: [1, 0, -1] (var 2/3); the zero vector → all 0; e3 is W_U's null direction
    lv = logit_var(w, w_u)
    assert lv[0].item() == pytest.approx(2 / 3)
    assert lv[1].item() == pytest.approx(0.0, abs=1e-12)
    svals, vecs = unembed_spectrum(w_u)
    assert svals[0].item() == pytest.approx(0.0, abs=1e-12)
    assert svals[-1].item() == pytest.approx(math.sqrt(2))
    rho = null_fraction(w, vecs[:, :1])
    assert rho.tolist() == pytest.approx([0.0, 1.0, 1 / math.sqrt(2)])


def test_norm_linear_map_reads_gamma_and_centering_off_the_module():
    D = 6
    ln = nn.LayerNorm(D)
    rms_gemma_like = make_gemma_norm(D)
    with torch.no_grad():
        ln.weight.copy_(torch.arange(1.0, D + 1))
        ln.bias.fill_(0.3)
    centering = torch.eye(D) - torch.full((D, D), 1 / D)
    torch.testing.assert_close(norm_linear_map(ln, D), centering @ torch.diag(ln.weight.detach()))
    expected = torch.diag(1 + rms_gemma_like.weight.detach())  # Gemma's RMSNorm multiplies by (1 + w)
    torch.testing.assert_close(norm_linear_map(rms_gemma_like, D), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(NormFoldError, match="fold_final_norm=False"):
        norm_linear_map(nn.Sequential(nn.Linear(D, D), nn.Tanh()), D)


def test_null_k_rules():
    assert resolve_null_k(None, 768) == 40
    assert resolve_null_k(None, 128) == 13
    assert resolve_null_k(0.1, 64) == 7
    assert resolve_null_k(5, 32) == 5
    for bad in (0, 32, 1.5):
        with pytest.raises(ValueError, match="null_k"):
            resolve_null_k(bad, 32)


def test_du_rule_takes_the_lowest_logit_var_among_the_largest_norms():
    # 8 neurons: top 25% by norm = neurons 6, 7; neuron 0 has the lowest LogitVar overall but a small norm
    s = _fake_screen([1, 2, 3, 4, 5, 6, 7, 8], [0.0, 1, 1, 1, 1, 1, 0.5, 0.2], [0.1] * 8)
    assert select_du(s, top_frac=0.25, n=1) == [7]
    assert select_du(s, top_frac=0.25, n=10) == [7, 6]
    assert select_du(s, top_frac=1.0, n=2) == [0, 7]
    s2 = _fake_screen([1] * 5, [1] * 5, [0.2, 0.9, 0.1, 0.9, 0.5])
    assert select_null(s2, n=3) == [1, 3, 4]


def test_controls_share_the_norm_decile_and_avoid_the_selection():
    rng = np.random.default_rng(1)
    s = _fake_screen(rng.lognormal(size=200), rng.random(200), rng.random(200))
    targets = [int(i) for i in np.argsort(-s.norm.to_numpy())[:5]]  # all in the top decile
    ctrl = matched_controls(s, targets, 3, targets, seed=0)
    deciles = s.norm_decile.to_numpy()
    for t, cs in ctrl.items():
        assert len(cs) == 3 and len(set(cs)) == 3
        assert all(deciles[c] == deciles[t] and c not in targets for c in cs)
    assert ctrl == matched_controls(s, targets, 3, targets, seed=0)
    sets = control_sets(s, targets, 4, targets, seed=0)
    assert len(sets) == 4
    for cs in sets:
        assert sorted(deciles[cs]) == sorted(deciles[targets]) and not set(cs) & set(targets)


def test_iou_and_matching_by_cosine():
    assert iou([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert iou([], []) == 1.0 and iou([1], []) == 0.0
    a = torch.eye(4)
    b = torch.eye(4)[[2, 0, 1, 3]] * 3.0  # neuron i of `a` sits at a permuted index in `b`
    m = match_neurons(a, b, [0, 3])
    assert m.match.tolist() == [1, 3] and m.cos_match.tolist() == pytest.approx([1.0, 1.0])
    assert m.same_index.tolist() == [False, True]


def test_next_token_stats_uniform_and_peaked_logits():
    V = 5
    logits = torch.zeros(1, 3, V)
    logits[0, 1, 2] = 100.0  # position 1 predicts token 2 with certainty
    ids = torch.tensor([[0, 4, 2]])
    h, loss, valid = next_token_stats(logits, ids, torch.ones(1, 3))
    assert h[0, 0].item() == pytest.approx(math.log(V)) and loss[0, 0].item() == pytest.approx(math.log(V))
    assert h[0, 1].item() == pytest.approx(0.0, abs=1e-6) and loss[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    _, _, valid = next_token_stats(logits, ids, torch.tensor([[1, 1, 0]]))
    assert valid.tolist() == [[True, False]]


def test_ablation_stats_are_token_weighted():
    eff = np.zeros((1, 2, 3, 2))
    eff[0, 0, 0] = [1.0, 4.0]  # dH_total per text; text 2 has 3× the tokens
    stats = AblationStats(clean=np.array([[2.0, 1.0], [6.0, 3.0]]), n_tokens=np.array([1, 3]), effects=eff)
    mean, se = stats.aggregate()
    assert mean[0, 0, 0] == pytest.approx((1 + 12) / 4)
    assert stats.clean_means() == pytest.approx(((2 + 18) / 4, (1 + 9) / 4))
    assert se[0, 0, 0] > 0 and se[0, 1, 0] == 0


def test_explained_share_against_hand_numbers():
    def effects(d_own, d_other, d_ctrl):
        rows = []
        for rule in ("du", "null"):
            rows.append({"kind": "set", "condition": f"{rule}_set", "dH_total": d_own, "dH_direct": 0.0})
            rows.append({"kind": "set", "condition": f"{rule}_set_other", "dH_total": d_other, "dH_direct": 0.0})
            for j, d in enumerate(d_ctrl):
                rows.append({"kind": "set", "condition": f"{rule}_set_control_{j}", "dH_total": d, "dH_direct": 0})
        return pd.DataFrame(rows)

    # post is 0.5 nats less uncertain; its own set raises it by 0.4 (base's set by 0.2); base's own set
    # raises base by 0.1 (post's set by 0.3)
    eff = {"base": effects(0.1, 0.3, [0.0, 0.0]), "post": effects(0.4, 0.2, [0.05, 0.15])}
    t = explained_share({"base": 3.0, "post": 2.5}, eff).set_index(["rule", "source", "effect"])
    own = t.loc[("du", "own", "total")]
    assert own.gap == pytest.approx(-0.5)
    assert own.share_both == pytest.approx(1 - ((2.5 + 0.4) - (3.0 + 0.1)) / -0.5)  # 0.6
    assert own.share_post == pytest.approx(0.8) and own.share_base == pytest.approx(-0.2)
    assert own.control_share_both_mean == pytest.approx(np.mean([0.1, 0.3]))
    post_set = t.loc[("du", "post", "total")]  # post's set in both: +0.3 in base, +0.4 in post
    assert post_set.share_both == pytest.approx((0.3 - 0.4) / -0.5)
    base_set = t.loc[("null", "base", "total")]  # base's set in both: +0.1 in base, +0.2 in post
    assert base_set.share_both == pytest.approx((0.1 - 0.2) / -0.5)
    assert np.isnan(explained_share({"base": 1.0, "post": 1.0}, eff).share_both).all()


def test_load_texts_reads_non_empty_lines_of_a_file_or_folder(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\n  three  \n")
    (tmp_path / "b.txt").write_text("four\n")
    assert load_texts(tmp_path / "a.txt") == ["one two", "three"]
    assert load_texts(tmp_path) == ["one two", "three", "four"]
    with pytest.raises(ValueError, match="not found"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt files"):
        load_texts(tmp_path / "empty")


def test_real_models_default_to_the_shared_tinystories_subset():
    if shared_data_dir() is None:
        pytest.skip("../shared/data is absent, so the TinyStories subset cannot be read")
    texts = load_texts(shared_path("texts"))
    assert len(texts) > 300 and not any("Data set:" in t for t in texts[:5])


def test_bad_inputs_fail_early_with_a_fix():
    with pytest.raises(ValueError, match="lower n_ref"):
        split_texts(["a b"] * 5, 4, 4, 0)
    with pytest.raises(ValueError, match="top_frac"):
        NeuronsConfig(top_frac=0)
    with pytest.raises(ValueError, match="screen_layers"):
        NeuronsConfig(screen_layers="some")
    with pytest.raises(ValueError, match="null_k"):
        NeuronsConfig(null_k=-3)
