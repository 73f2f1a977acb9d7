"""Refusal, pure parts: scores, KL, prefix match, diff-in-means, candidate selection, config, data splits,
length matching, diagnostics and the verdict text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.refusal import (
    RefusalConfig,
    load_refusal_data,
)
from posttrain_probe.probes.refusal.core import (
    is_refusal,
    kl_next_token,
    refusal_log_odds,
    refusal_start_token_ids,
    select_candidate,
)
from posttrain_probe.stats import cosine_batched, diff_in_means


def test_refusal_log_odds_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    p = torch.softmax(logits, -1)
    for ids in ([0], [0, 3]):
        pr = p[:, ids].sum(-1)
        expect = torch.log(pr) - torch.log(1 - pr)
        assert torch.allclose(refusal_log_odds(logits, ids), expect, atol=1e-6)
    assert refusal_log_odds(logits, [1])[1].item() == pytest.approx(math.log(1 / 3))
    with pytest.raises(ValueError, match="no refusal-start tokens"):
        refusal_log_odds(logits, [])


def test_kl_next_token_hand_computed_and_zero_on_equal():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    expect = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_next_token(p.log(), q.log()).item() == pytest.approx(expect, rel=1e-5)
    z = torch.randn(3, 7)
    assert kl_next_token(z, z + 5.0).abs().max() < 1e-5  # a constant shift is the same distribution


def test_prefix_match():
    phrases = ("I cannot", "I'm sorry")
    assert is_refusal("  I cannot help with that.", phrases)
    assert is_refusal("I'm sorry, no", phrases)
    assert not is_refusal("Sure. I cannot wait", phrases)
    assert not is_refusal("", phrases)


def test_diff_in_means_recovers_planted_direction():
    g = torch.Generator().manual_seed(0)
    d, n = 64, 2000
    u = torch.randn(d, generator=g)
    u /= u.norm()
    harmless = torch.randn(n, 3, d, generator=g)
    harmful = torch.randn(n, 3, d, generator=g) + 3.0 * u
    r = diff_in_means(harmful, harmless)
    assert r.shape == (3, d)
    assert (cosine_batched(r, u.expand(3, d)) > 0.99).all()
    with pytest.raises(ValueError, match="shapes differ"):
        diff_in_means(harmful, harmless[:, :2])


def test_select_candidate_filters_and_fallback():
    t = pd.DataFrame(
        {
            "layer": [0, 1, 2, 3, 4],
            "bypass_score": [-9.0, -2.0, -5.0, -7.0, -20.0],
            "induce_score": [1.0, 2.0, 3.0, -1.0, 5.0],
            "kl": [0.5, 0.01, 0.05, 0.01, 0.01],
        }
    )
    # layer 4 fails the layer filter (4 ≥ 0.8·5), 0 fails KL, 3 fails induce: choose the lower of 1 and 2
    idx, out = select_candidate(t, n_layers=5)
    assert idx == 2 and out.selected.sum() == 1 and out.loc[2, "passes_all"]
    assert out.passes_all.tolist() == [False, True, True, False, False]
    t2 = t.assign(induce_score=-1.0)
    idx2, out2 = select_candidate(t2, n_layers=5)
    assert idx2 == 0 and not out2.passes_all.any()  # fallback: lowest bypass among layers < 4
    idx3, _ = select_candidate(t2.assign(norm=[0.0, 1, 1, 1, 1]), n_layers=5)
    assert idx3 == 3  # a zero candidate is never chosen
    with pytest.raises(ValueError, match="every candidate direction is zero"):
        select_candidate(t.assign(norm=0.0), n_layers=5)


def test_refusal_start_tokens(tmp_path):
    from posttrain_probe.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = refusal_start_token_ids(tok, ("cannot help", "I'm sorry", "zzz"))
    assert tok.convert_ids_to_tokens(ids) == ["cannot"]  # unknown first tokens are dropped


def test_config_validation():
    with pytest.raises(ValueError, match="base_format"):
        RefusalConfig(base_format="fancy")
    with pytest.raises(ValueError, match="instruction"):
        RefusalConfig(base_template="User: hi")
    with pytest.raises(ValueError, match="kl_max"):
        RefusalConfig(kl_max=0)
    with pytest.raises(ValueError, match="refusal_phrases"):
        RefusalConfig(refusal_phrases=())


def test_load_refusal_data_from_shared_splits():
    root = shared_data_dir()
    if root is None or not (root / "refusal_direction").is_dir():
        pytest.skip("../shared/data/refusal_direction is not available on this machine")
    d = load_refusal_data(root / "refusal_direction", root / "refusal_direction" / "advbench.csv", 16, 8, 8)
    assert len(d.harmful_train) == len(d.harmless_train) == 16 and len(d.harmful_eval) == 8
    assert all(x.harmful for x in d.harmful_eval) and not any(x.harmful for x in d.harmless_eval)
    assert d.sources["advbench"].endswith("advbench.csv")
    assert np.unique([x.text for x in d.harmful_train]).size == 16


def test_length_matched_pairs():
    from posttrain_probe.probes.refusal.diagnostics import length_matched_pairs
    from posttrain_probe.probes.refusal.model import Prompts

    def prompts(lengths):
        T = max(lengths)
        mask = torch.tensor([[0] * (T - n) + [1] * n for n in lengths])
        return Prompts("chat", [""] * len(lengths), torch.ones_like(mask), mask)

    got = length_matched_pairs(prompts([5, 6, 5, 5]), prompts([6, 5, 7]), 10)
    assert got == [(0, 1), (1, 0)]  # one pair of length 5 (harmless row 1), one of length 6; length 7 unmatched
    assert length_matched_pairs(prompts([5, 5, 6]), prompts([5, 5, 6]), 2) == [(0, 0), (2, 2)]  # round-robin


def _diag(bypass_all=4.65):
    return {
        "locus": {
            "n_pairs": 25,
            "gap": 15.4,
            "instruction": [1.0, 0.97, 0.81, 0.54, 0.0],
            "post_instruction": [0.0, 0.04, 0.19, 0.38, 1.0],
        },
        "n_candidates": 3,
        "bypass_score_all_candidates": bypass_all,
        "addition_sweep": {
            "selected": {"layer": 1, "position": -1, "induce_score": {"1": -8.3, "2": -7.4}},
            "best_induce": {"layer": 3, "position": -1, "induce_score": {"1": -3.05, "2": 3.6}},
        },
    }


def test_diagnosis_note_only_for_a_refusing_model_whose_direction_fails_and_with_the_evidence():
    from posttrain_probe.probes.refusal.diagnostics import diagnosis_note

    rates = {
        "harmful.baseline": {"post": 1.0, "base": 0.0},
        "harmful.ablation": {"post->post": 1.0, "base->base": 0.0},
        "harmless.addition": {"post->post": 0.0, "base->base": 0.0},
    }
    baseline = {"val_harmful_refusal_score": 6.74, "val_harmless_refusal_score": -8.94}
    note = diagnosis_note("post", _diag(), baseline, rates)
    assert "from 6.74 to 4.65 (> 0: still refusing)" in note and "span of all 3" in note
    assert "1.00/0.97/0.81/0.54" in note and "0.00/0.04/0.19/0.38" in note
    assert "reads it from the instruction itself" in note and "c=2: 3.60" in note
    assert diagnosis_note("base", _diag(), baseline, rates) is None  # base does not refuse: nothing to explain
    works = rates | {"harmful.ablation": {"post->post": 0.1}, "harmless.addition": {"post->post": 0.9}}
    assert diagnosis_note("post", _diag(), baseline, works) is None
    no_signal = _diag()
    no_signal["locus"] = no_signal["locus"] | {"gap": 0.01, "instruction": [float("nan")] * 5}
    note = diagnosis_note("post", no_signal, baseline, rates)
    assert "Patching" not in note and "still refusing" in note  # only the evidence there is


def test_refusal_verdict_says_why_ablation_does_not_bypass_when_the_diagnostics_show_it():
    from posttrain_probe.probes.refusal.verdicts import verdicts as refusal_verdicts
    from posttrain_probe.results import RunResult

    summary = {
        "cosine_selected_directions": 0.0,
        "refusal_rate": {
            "harmful.baseline": {"post": 1.0},
            "harmful.ablation": {"post->post": 1.0},
            "harmless.addition": {"post->post": 0.0, "base->post": 0.0},
        },
        "selected": {"post": {"val_harmful_refusal_score": 6.74}},
    }
    cells = {  # per-prompt outcomes behind the rates above (20 prompts each)
        ("none", "baseline", "harmful"): 1,
        ("post", "ablation", "harmful"): 1,
        ("post", "addition", "harmless"): 0,
        ("base", "addition", "harmless"): 0,
    }
    gen = pd.DataFrame(
        [
            dict(applied_to="post", direction_from=src, condition=c, prompt_set=ps, index=i, refused=bool(r))
            for (src, c, ps), r in cells.items()
            for i in range(20)
        ]
    )
    res = RunResult(analysis="refusal", config={}, summary=summary, tables={"generations": gen})
    plain = {v["claim"]: v for v in refusal_verdicts(res)}
    abl = plain["ablating the refusal direction bypasses refusal in the post model"]
    assert abl["verdict"] == "refuted" and "property of the model" not in abl["evidence"]
    res.summary["diagnostics"] = {"post": _diag()}
    why = {v["claim"]: v for v in refusal_verdicts(res)}
    abl = why["ablating the refusal direction bypasses refusal in the post model"]
    assert abl["verdict"] == "refuted" and "property of the model" in abl["evidence"]
    assert "4.65" in abl["evidence"] and "1.00/0.97/0.81/0.54" in abl["evidence"]
    fwd = why["the base refusal direction transfers poorly to the post model (forward)"]
    assert fwd["verdict"] == "inconclusive" and "c=2 3.60" in fwd["evidence"]
    res.summary["diagnostics"] = {"post": _diag(bypass_all=-2.0)}  # the span does bypass: no such claim
    claims = {v["claim"]: v["evidence"] for v in refusal_verdicts(res)}
    assert "property of the model" not in claims["ablating the refusal direction bypasses refusal in the post model"]
