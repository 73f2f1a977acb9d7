"""Every verdicts module follows one rule: the word comes from the 95% interval against the threshold (above /
below / straddling), and each evidence guard turns it inconclusive with its reason. Hand-built RunResults only."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import bootstrap_ci, decide, moments, pooled_pearson, seed_ci

# ---------------------------------------------------------------------------------------------- shared helpers


def test_bootstrap_and_seed_intervals_and_pooled_pearson():
    est, lo, hi = bootstrap_ci(np.arange(100.0), n_boot=500, seed=0)
    assert est == 49.5 and lo < 49.5 < hi and hi - lo < 15
    assert bootstrap_ci([1.0])[1:] == (None, None)  # one item: no interval
    m, lo, hi = seed_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    rows = np.stack([moments(a, b) for a, b in zip(x, y)])
    assert pooled_pearson(rows, np.arange(7)) == pytest.approx(np.corrcoef(x.ravel(), y.ravel())[0, 1])


@pytest.mark.parametrize(
    ("iv", "holds", "word"),
    [((0.9, 0.85, 0.95), ">", "reproduced"), ((0.5, 0.4, 0.6), ">", "refuted"), ((0.8, 0.7, 0.9), ">", "inconclusive")]
    + [((0.1, 0.0, 0.2), "<", "reproduced"), ((0.1, None, None), "<", "inconclusive")],
)
def test_decide_follows_the_interval_and_a_guard_overrides(iv, holds, word):
    v = decide("P", "c", iv, 10, 0.8 if holds == ">" else 0.5, "rule", "ev", "s", holds_when=holds)
    assert v.verdict == word and v.ci_low == iv[1]
    g = decide("P", "c", iv, 10, 0.8, "rule", "ev", "s", holds_when=holds, guard="no signal")
    assert g.verdict == "inconclusive" and g.evidence.endswith("Inconclusive because no signal")


# ---------------------------------------------------------------------------------------------- tracing


def _tracing(post_noise: float, signature: float = 0.2, n: int = 40, seed: int = 0) -> RunResult:
    """n facts of 5 tokens, subject [1, 3), 4 layers; post = base + noise; the ROME signature is an AIE of
    `signature` at the last subject token (position 2) in both models."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.05, size=(n, 5, 4))
    base[:, 2, 1] += signature
    base[:, 4, :] += 0.3  # the last-token row
    post = base + rng.normal(0, post_noise, size=base.shape)
    post[:, 2, 1] = base[:, 2, 1] * 0 + signature + rng.normal(0, 0.01, n)
    t = {}
    for r, ie in (("base", base), ("post", post)):
        t[f"fact_index.{r}"] = torch.arange(n)
        for k in ("resid", "mlp"):
            t[f"ie.{r}.{k}"] = torch.tensor(ie, dtype=torch.float32)
    facts = pd.DataFrame(
        dict(index=range(n), n_tokens=5, subject_start=1, subject_end=3, known_base=True, known_post=True)
    )
    summary = {"kinds": ["resid", "mlp"], "pearson_base_post": {}, "n_common": n}
    return RunResult("causal_tracing", {"seed": 0}, summary, tables={"facts": facts}, tensors=t)


@pytest.mark.parametrize(("noise", "word"), [(0.01, "reproduced"), (1.0, "refuted"), (0.11, "inconclusive")])
def test_tracing_word_follows_the_per_fact_cell_interval(noise, word):
    from posttrain_probe.probes.tracing.verdicts import verdicts

    (v,) = verdicts(_tracing(noise))
    assert v.verdict == word, (v.estimate, v.ci_low, v.ci_high)
    assert v.ci_low <= v.estimate <= v.ci_high and v.n == 40 and v.threshold == 0.8
    assert "Inconclusive because" not in v.evidence


def test_tracing_needs_the_rome_signature_in_both_models():
    from posttrain_probe.probes.tracing.verdicts import verdicts

    (v,) = verdicts(_tracing(0.01, signature=0.0))
    assert v.verdict == "inconclusive" and v.ci_low > 0.8  # the maps agree, but nothing is stored there
    assert "ROME signature" in v.evidence and "absent in base and post" in v.evidence


# ---------------------------------------------------------------------------------------------- patching


def _patching(fwd_noise: float, judged: bool = True, n: int = 30) -> RunResult:
    rng = np.random.default_rng(1)
    own = rng.normal(0, 1, size=(n, 6, 3))
    own[:, :2] = 0.0  # before the subject
    fwd = own + rng.normal(0, fwd_noise, size=own.shape)
    ld = rng.normal(0, 1, n)
    t = {"delta.post": torch.tensor(own), "delta.base_to_post": torch.tensor(fwd)}
    for r in ("base", "post"):
        t[f"valid.{r}"] = torch.ones(n, dtype=torch.bool)
        t[f"ld_true.{r}"] = torch.tensor(np.abs(ld) + 1 if judged else ld)
        t[f"ld_false.{r}"] = torch.tensor(-np.abs(ld) - 1 if judged else rng.normal(0, 1, n))
    pairs = pd.DataFrame(dict(n_tokens=6, subject_start=2, dataset="cities"), index=range(n))
    return RunResult("truth_patching", {"seed": 0, "n_shots": 4}, {}, tables={"pairs": pairs}, tensors=t)


@pytest.mark.parametrize(("noise", "word"), [(0.1, "reproduced"), (3.0, "refuted"), (0.75, "inconclusive")])
def test_patching_word_follows_the_per_pair_interval(noise, word):
    from posttrain_probe.probes.patching.verdicts import verdicts

    (v,) = verdicts(_patching(noise))
    assert v.verdict == word, (v.estimate, v.ci_low, v.ci_high)


def test_patching_needs_both_models_to_judge_and_explains_the_truth_accuracy():
    from posttrain_probe.probes.patching.verdicts import verdicts

    (v,) = verdicts(_patching(0.1, judged=False))
    assert v.verdict == "inconclusive" and v.ci_low > 0.8
    assert "do not judge these statements" in v.evidence
    assert "truth section's few-shot accuracy pools every truth dataset" in v.evidence and "cities" in v.evidence


# ---------------------------------------------------------------------------------------------- truth


def _truth(post_mix: float, cross_correct: float = 1.0, n: int = 80, noise: float = 1.0, own_nie=0.5, fwd_nie=0.5):
    """Activations (n, 3 layers, 16): truth along v in base, along post_mix·v + (1−post_mix)·u in post."""
    rng = np.random.default_rng(2)
    v, u = np.eye(16)[0], np.eye(16)[1]
    y = np.tile([1, 0], n // 2)
    d_post = post_mix * v + math.sqrt(max(1 - post_mix**2, 0)) * u
    acts = {}
    for r, d in (("base", v), ("post", d_post)):
        a = rng.normal(0, noise, size=(n, 3, 16))
        a[:, 1] += 3 * np.outer(2 * y - 1, d)
        acts[r] = torch.tensor(a, dtype=torch.float32)
    split = np.where(np.arange(n) < n // 2, "train", "test")
    st = pd.DataFrame(dict(text="s", label=y, dataset="d", split=split))
    preds = []
    test = np.flatnonzero(split == "test")
    for kind in ("mass_mean", "logistic"):
        for src in ("base", "post"):
            for dst in ("base", "post"):
                p = 1.0 if src == dst else cross_correct
                ok = rng.random(len(test)) < p
                preds += [
                    dict(statement=i, probe=kind, layer=1, direction_from=src, applied_to=dst, correct=c)
                    for i, c in zip(test, ok)
                ]
    ipd = []
    for i in test:
        lab = int(y[i])
        sign = 1 if lab == 0 else -1
        for src, eff in (("post", own_nie), ("base", fwd_nie)):
            pd0 = 0.5 if lab else -0.5
            ipd.append(
                dict(
                    statement=i,
                    dataset="d",
                    label=lab,
                    direction_from=src,
                    applied_to="post",
                    pd=pd0,
                    pd_int=pd0 + sign * eff * 1.5 + rng.normal(0, 0.05),
                )
            )
    summary = {"probe_layer": 1, "cosine_at_probe_layer": {"mass_mean": 0.0, "logistic": 0.3}, "nie": {"x": 0.0}}
    tables = {"statements": st, "probe_predictions": pd.DataFrame(preds), "intervention_pd": pd.DataFrame(ipd)}
    tensors = {"activations.base": acts["base"], "activations.post": acts["post"]}
    return RunResult("truth", {"seed": 0}, summary, tables=tables, tensors=tensors)


@pytest.mark.parametrize(
    ("mix", "noise", "word"), [(0.98, 1.0, "reproduced"), (0.2, 1.0, "refuted"), (0.85, 1.0, "inconclusive")]
)
def test_truth_shared_direction_follows_the_bootstrapped_mass_mean_cosine(mix, noise, word):
    from posttrain_probe.probes.truth.verdicts import verdicts

    v = verdicts(_truth(mix, noise=noise))[0]
    assert v.verdict == word, (v.estimate, v.ci_low, v.ci_high)
    assert "logistic: cosine 0.300" in v.evidence and "cross-model accuracy" in v.evidence


def test_truth_direction_must_transfer_across_models():
    from posttrain_probe.probes.truth.verdicts import verdicts

    v = verdicts(_truth(0.98, cross_correct=0.5))[0]
    assert v.verdict == "inconclusive" and v.ci_low > 0.8
    assert "does not read truth from the other model" in v.evidence and "transfer across models: none" in v.evidence


@pytest.mark.parametrize(("fwd", "word"), [(0.5, "reproduced"), (0.1, "refuted"), (0.35, "inconclusive")])
def test_truth_nie_ratio_interval_and_own_response_guard(fwd, word):
    from posttrain_probe.probes.truth.verdicts import verdicts

    v = verdicts(_truth(0.98, fwd_nie=fwd))[1]
    assert v.verdict == word, (v.estimate, v.ci_low, v.ci_high)
    g = verdicts(_truth(0.98, own_nie=0.0, fwd_nie=0.0))[1]
    assert g.verdict == "inconclusive" and "does not respond to its own direction" in g.evidence


# ---------------------------------------------------------------------------------------------- refusal


def _gen(cells: dict[tuple[str, str, str, str], list[int]]) -> pd.DataFrame:
    rows = []
    for (applied, src, cond, ps), refused in cells.items():
        rows += [
            dict(applied_to=applied, direction_from=src, condition=cond, prompt_set=ps, index=i, refused=bool(r))
            for i, r in enumerate(refused)
        ]
    return pd.DataFrame(rows)


def _refusal(ablated: list[int], baseline: list[int], passed: bool = False, induces: bool = True) -> RunResult:
    n = len(baseline)
    gen = _gen(
        {
            ("post", "none", "baseline", "harmful"): baseline,
            ("post", "post", "ablation", "harmful"): ablated,
            ("post", "post", "addition", "harmless"): [int(induces)] * n,
            ("post", "base", "addition", "harmless"): [0] * n,
            ("base", "none", "baseline", "harmful"): [0] * n,
            ("base", "base", "ablation", "harmful"): [0] * n,
            ("base", "base", "addition", "harmless"): [0] * n,
        }
    )
    sel = {r: {"passed_filters": passed} for r in ("base", "post")}
    summary = {"cosine_selected_directions": -0.08, "selected": sel}
    return RunResult("refusal_direction", {}, summary, tables={"generations": gen})


@pytest.mark.parametrize(
    ("ablated", "word"),
    [
        ([0] * 40, "reproduced"),
        ([1] * 40, "refuted"),
        ([1] * 14 + [0] * 26, "inconclusive"),  # ratio 0.35 < 0.5, but its CI straddles 0.5
    ],
)
def test_refusal_ablation_word_follows_the_paired_rate_ratio(ablated, word):
    from posttrain_probe.probes.refusal.verdicts import CLAIM_ABLATE, verdicts

    v = {v.claim: v for v in verdicts(_refusal(ablated, [1] * 40))}[CLAIM_ABLATE]
    assert v.verdict == word, (v.estimate, v.ci_low, v.ci_high)
    g = {v.claim: v for v in verdicts(_refusal([0] * 40, [0] * 40))}[CLAIM_ABLATE]
    assert g.verdict == "inconclusive" and "does not refuse these prompts" in g.evidence


def test_refusal_comparison_needs_a_direction_that_passed_selection_or_mediates():
    from posttrain_probe.probes.refusal.verdicts import CLAIM_DIFFER, CLAIM_FORWARD, verdicts

    none = {v.claim: v for v in verdicts(_refusal([1] * 40, [1] * 40, induces=False))}
    assert none[CLAIM_DIFFER].verdict == "inconclusive"
    assert "neither direction passed the selection filters" in none[CLAIM_DIFFER].evidence
    assert "does not induce refusal" in none[CLAIM_FORWARD].evidence  # and transfer cannot be judged
    ok = {v.claim: v for v in verdicts(_refusal([0] * 40, [1] * 40))}
    assert "neither direction" not in ok[CLAIM_DIFFER].evidence and "no interval" in ok[CLAIM_DIFFER].evidence
    assert ok[CLAIM_FORWARD].verdict == "reproduced"  # base→post 0 of post→post 1


# ---------------------------------------------------------------------------------------------- neurons


def _neurons(share: float, std: float, gap: float = 0.05) -> RunResult:
    total = {"share_both": share, "control_share_both_mean": 0.0, "control_share_both_std": std}
    direct = {"share_both": 0.9, "control_share_both_mean": 0.0, "control_share_both_std": 0.9}
    summary = {
        "explained_share": {"du_own_total": total, "du_own_direct": direct, "du_base_total": direct},
        "base": {"entropy": 1.0},
        "post": {"entropy": 1.0 + gap},
    }
    return RunResult("entropy_neurons", {}, summary)


@pytest.mark.parametrize(
    ("share", "std", "word"),
    [
        (0.05, 0.05, "reproduced"),
        (0.8, 0.1, "refuted"),
        (0.12, 0.10, "inconclusive"),  # 0.12 < 0.2, but its interval straddles 0.2
    ],
)
def test_neuron_word_follows_the_control_spread_interval(share, std, word):
    from posttrain_probe.probes.neurons.verdicts import verdicts

    (v,) = verdicts(_neurons(share, std))
    assert v.verdict == word and "random control sets" in v.rule
    assert "du_own_direct" in v.evidence and "du_base_total" not in v.evidence
    (g,) = verdicts(_neurons(share, std, gap=0.005))
    assert g.verdict == "inconclusive" and "too small to explain" in g.evidence


# ---------------------------------------------------------------------------------------------- RLVR dynamics


def _run(h0, h1, a0=0.2, a1=0.6, r2=0.9, cov=0.95):
    return dict(
        steps=50,
        accuracy_first=a0,
        accuracy_last=a1,
        entropy_first=h0,
        entropy_last=h1,
        entropy_drop_frac=1 - h1 / h0,
        law_a=0.3,
        law_b=1.0,
        law_r2=r2,
        law_ceiling=0.7,
        share_steps_cov_positive=cov,
    )


def _seeds(ratios: list[float], **kw) -> RunResult:
    s = {}
    for k, q in enumerate(ratios):
        s[f"grpo_seed{k}"] = _run(1.0, 0.4 + 0.01 * k, **kw)
        s[f"clip_cov_seed{k}"] = _run(1.0, (0.4 + 0.01 * k) * q, **kw)
    return RunResult("rlvr_dynamics", {}, s)


@pytest.mark.parametrize(
    ("ratios", "word"),
    [
        ([1.5, 1.4, 1.6, 1.5, 1.45], "reproduced"),
        ([0.6, 0.65, 0.55, 0.6, 0.62], "refuted"),
        ([0.8, 1.2, 0.9, 1.1, 1.0], "inconclusive"),
    ],
)
def test_rlvr_ratio_over_paired_seeds(ratios, word):
    from posttrain_probe.analysis.verdicts import dynamics_verdicts

    rows = {v.claim: v for v in dynamics_verdicts(_seeds(ratios))}
    v = rows["Clip-Cov keeps entropy higher than GRPO"]
    assert v.verdict == word and v.n == 5 and "over 5 paired seeds" in v.rule
    assert rows["without intervention, entropy collapses while performance rises"].verdict == "reproduced"


def test_rlvr_one_run_uses_a_step_bootstrap_and_the_accuracy_guard():
    from posttrain_probe.analysis.verdicts import dynamics_verdicts

    steps = np.arange(1, 61)
    rng = np.random.default_rng(3)
    h = 1.0 - 0.6 * steps / 60 + rng.normal(0, 0.02, 60)
    for acc, word in ((0.1 + 0.5 * steps / 60, "reproduced"), (np.full(60, 0.3), "inconclusive")):
        curves = pd.DataFrame(dict(run="grpo", step=steps, entropy_mean=h, accuracy=acc, cov_mean=rng.normal(1, 1, 60)))
        res = RunResult(
            "rlvr_dynamics", {}, {"grpo": _run(h[0], h[-1], acc[0], acc[-1] + 1e-9)}, tables={"curves": curves}
        )
        v = {v.claim: v for v in dynamics_verdicts(res)}[
            "without intervention, entropy collapses while performance rises"
        ]
        assert v.verdict == word and "step noise only" in v.rule
    assert "accuracy does not clearly rise" in v.evidence
    res.summary["grpo"].update(accuracy_first=0.0, accuracy_last=0.0)
    (v,) = dynamics_verdicts(res)
    assert v.verdict == "inconclusive" and "no learning signal" in v.evidence


# ---------------------------------------------------------------------------------------------- toy build


@pytest.mark.parametrize(
    ("base", "post", "n", "word"),
    [
        (0.05, 0.9, 100, "reproduced"),
        (0.55, 0.62, 400, "refuted"),
        (0.45, 0.80, 40, "inconclusive"),  # 0.35 > 0.3, but its CI straddles 0.3
    ],
)
def test_new_knowledge_word_follows_the_difference_interval(base, post, n, word):
    from posttrain_probe.toyworld.verdicts import new_knowledge_verdicts

    toy = {"fact_recall": {"base_sft_new_facts": base, "post_sft_new_facts": post, "n_sft_new": n}}
    (v,) = new_knowledge_verdicts(toy)
    assert v.verdict == word and v.threshold == 0.3
    low = {"fact_recall": {"base_sft_new_facts": 0.0, "post_sft_new_facts": 0.45, "n_sft_new": 400}}
    (g,) = new_knowledge_verdicts(low)
    assert g.verdict == "inconclusive" and "does not clearly recall" in g.evidence
