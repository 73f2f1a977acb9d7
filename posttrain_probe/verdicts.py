"""Verdicts on the three papers' claims, computed from saved results (never from a model).

Each verdict is "reproduced", "not reproduced", "mixed" or "inconclusive" (the measurement has no signal, e.g.
the model does not do the task), with the numbers that decided it. Thresholds are
stated in the evidence text; they are judgement calls, so the numbers are always shown beside the verdict.
"""

from __future__ import annotations

from typing import Any

from .results import RunResult


def _v(paper: str, claim: str, verdict: str, evidence: str) -> dict[str, str]:
    return {"paper": paper, "claim": claim, "verdict": verdict, "evidence": evidence}


def truth_verdicts(res: RunResult) -> list[dict[str, str]]:
    s = res.summary
    cos = s.get("cosine_at_probe_layer", {})
    c = cos.get("mass_mean", next(iter(cos.values()), float("nan")))
    acc = s.get("test_acc_at_probe_layer", {})
    out = []
    linear = min(acc.get("base.logistic", 0), acc.get("post.logistic", 0))
    verdict = "reproduced" if c > 0.8 and linear > 0.8 else "not reproduced" if c < 0.5 else "mixed"
    out.append(
        _v(
            "Du et al. 2025",
            "a linear truth direction exists and is highly similar in base and post",
            verdict,
            f"cosine(base, post) at layer {s.get('probe_layer')} = {c:.3f}; logistic test accuracy "
            f"base {acc.get('base.logistic', float('nan')):.3f}, post {acc.get('post.logistic', float('nan')):.3f} "
            "(reproduced: cos > 0.8 and accuracy > 0.8)",
        )
    )
    nie = s.get("nie", {})
    if nie:
        fwd = nie.get("base->post", float("nan"))
        own = nie.get("post->post", float("nan"))
        ratio = fwd / own if own and own == own else float("nan")
        verdict = "reproduced" if ratio > 0.7 else "not reproduced" if ratio < 0.3 else "mixed"
        if not abs(own) > 0.05:
            verdict = "inconclusive"  # the post model does not respond to its own direction
        evidence = (
            f"NIE base→post {fwd:.3f} vs post→post {own:.3f} (ratio {ratio:.2f}; reproduced: > 0.7); "
            + ", ".join(f"{k} {v:.3f}" for k, v in nie.items())
        )
        if verdict == "inconclusive":
            evidence += _truth_reach_evidence(s.get("intervention_reach", {}))
        out.append(
            _v("Du et al. 2025", "the truth direction transfers between models for interventions", verdict, evidence)
        )
    return out


def _truth_reach_evidence(reach: dict[str, Any]) -> str:
    """Why an NIE ≈ 0 says nothing about the direction, when the run's patching check shows it."""
    shares = {r: d.get("band_cells_share", float("nan")) for r, d in reach.items() if d.get("n_pairs")}
    if not shares or not all(v < 0.1 for v in shares.values()):
        return ""
    d = next(iter(reach.values()))
    band, lps = d["band"], {r: reach[r]["last_position_share"] for r in shares}
    return (
        ". The NIE ≈ 0 is a property of the model, not a failure of the method: patching the full residual of "
        f"true statements into false ones at the intervened cells (last {d['n_last']} statement tokens, "
        f"resid[{band[0]}..{band[-1]}]) restores "
        + ", ".join(f"{r} {abs(v) if abs(v) < 5e-4 else v:.3f}" for r, v in shares.items())
        + " of the P(TRUE) − P(FALSE) gap, while the last position alone restores "
        + "; ".join(f"{r} " + "/".join(f"{x:.2f}" for x in v) for r, v in lps.items())
        + " at resid[0..L]: the answer never reads the cells the method writes, so no direction there can move it"
    )


def _share_with_controls(v: dict) -> str:
    nan = float("nan")
    return (
        f"{v.get('share_both', nan):+.1%} (random controls {v.get('control_share_both_mean', nan):+.1%} "
        f"± {v.get('control_share_both_std', nan):.1%})"
    )


def neuron_verdicts(res: RunResult) -> list[dict[str, str]]:
    """Judged on total (mean-ablation) effects, the quantity of the claim; direct effects are listed. A null claim
    needs resolution: when random neuron sets of the same size move the gap by ≥ 20% (control std), a share under
    20% says nothing, so the verdict is inconclusive, as it is when there is no gap to explain."""
    s = res.summary
    shares = {k: v for k, v in s.get("explained_share", {}).items() if "_own_" in k}
    judged = {k: v for k, v in shares.items() if k.endswith("_total")}
    if not judged:
        return []
    m = max(abs(v.get("share_both", float("nan"))) for v in judged.values())
    spread = max(v.get("control_share_both_std", float("nan")) for v in judged.values())
    verdict = "reproduced" if m < 0.2 else "not reproduced" if m > 0.5 else "mixed"
    gap = abs(s.get("post", {}).get("entropy", 0.0) - s.get("base", {}).get("entropy", 0.0))
    why = ""
    if not gap > 0.01:
        verdict, why = "inconclusive", f"; the gap ({gap:.3f} nats) is too small to explain"
    elif not spread < 0.2:
        verdict, why = (
            "inconclusive",
            (
                f"; random sets move the gap by up to ±{spread:.0%} (control std of total effects), more than the 20% "
                "the claim is judged at, so the measurement cannot resolve it"
            ),
        )
    return [
        _v(
            "Du et al. 2025",
            "confidence differences between base and post are not explained by entropy neurons",
            verdict,
            "share of the base→post entropy gap removed by ablating the selected set: "
            + ", ".join(f"{k} {_share_with_controls(v)}" for k, v in shares.items())
            + f"; entropy base {s.get('base', {}).get('entropy', float('nan')):.3f}, post "
            f"{s.get('post', {}).get('entropy', float('nan')):.3f} nats (reproduced: |share of total effect| < 20%)"
            + why,
        )
    ]


def dynamics_verdicts(res: RunResult) -> list[dict[str, str]]:
    s = res.summary
    out = []
    g = s.get("grpo")
    if g and g["accuracy_first"] == 0 and g["accuracy_last"] == 0:
        return [
            _v(
                "Cui et al. 2025 / Hao et al. 2025",
                "entropy dynamics claims",
                "inconclusive",
                f"GRPO never earned a reward in {g['steps']} steps (accuracy 0): no learning signal to study",
            )
        ]
    if g:
        collapsed = g["entropy_drop_frac"] > 0.3 and g["accuracy_last"] > g["accuracy_first"]
        out.append(
            _v(
                "Cui et al. 2025",
                "without intervention, entropy collapses while performance rises",
                "reproduced" if collapsed else "not reproduced",
                f"GRPO: entropy {g['entropy_first']:.3f} → {g['entropy_last']:.3f} ({g['entropy_drop_frac']:.0%} "
                f"drop), accuracy {g['accuracy_first']:.3f} → {g['accuracy_last']:.3f} over {g['steps']} steps",
            )
        )
        r2 = g["law_r2"]
        out.append(
            _v(
                "Cui et al. 2025",
                "R = −a·exp(H) + b fits performance against entropy",
                "reproduced" if r2 > 0.8 else "not reproduced" if r2 < 0.4 else "mixed",
                f"GRPO fit a = {g['law_a']:.3f}, b = {g['law_b']:.3f}, R² = {r2:.2f}, ceiling b − a = "
                f"{g['law_ceiling']:.3f} (reproduced: R² > 0.8)",
            )
        )
        pos = g["share_steps_cov_positive"]
        out.append(
            _v(
                "Cui et al. 2025",
                "the covariance term stays mostly positive",
                "reproduced" if pos > 0.8 else "not reproduced" if pos < 0.5 else "mixed",
                f"share of GRPO steps with batch mean Cov > 0: {pos:.2f}",
            )
        )
        cov_runs = {k: v for k, v in s.items() if k in ("clip_cov", "kl_cov")}
        if cov_runs:
            kept = {k: v["entropy_last"] / max(g["entropy_last"], 1e-9) for k, v in cov_runs.items()}
            ok = all(x > 1.2 for x in kept.values())
            out.append(
                _v(
                    "Cui et al. 2025",
                    "Clip-Cov and KL-Cov keep entropy higher than GRPO",
                    "reproduced" if ok else "not reproduced" if all(x < 1.05 for x in kept.values()) else "mixed",
                    ", ".join(f"{k}: final entropy {v:.2f}× GRPO's" for k, v in kept.items())
                    + " (reproduced: > 1.2× for both; same prompts and sampling seeds per step)",
                )
            )
    tp = res.tables.get("token_predictors")
    if tp is not None and len(tp):
        rows = {(r.run, r.predictor): r.pearson for r in tp.itertuples()}
        better = [run for run in {r for r, _ in rows} if rows.get((run, "-omega"), -1) > rows.get((run, "-cov"), 1)]
        n = len({r for r, _ in rows})
        out.append(
            _v(
                "Hao et al. 2025 (STEER)",
                "token-level Ω predicts the realized entropy change better than Cov",
                "reproduced" if len(better) == n else "not reproduced" if not better else "mixed",
                "per-token Pearson with realized ΔH: "
                + ", ".join(
                    f"{run}: Ω {rows.get((run, '-omega'), float('nan')):.2f} "
                    f"vs Cov {rows.get((run, '-cov'), float('nan')):.2f}"
                    for run in sorted({r for r, _ in rows})
                ),
            )
        )
        st = s.get("steer")
        if st and g:
            out.append(
                _v(
                    "Hao et al. 2025 (STEER)",
                    "STEER mitigates entropy collapse",
                    "reproduced" if st["entropy_last"] > 1.2 * g["entropy_last"] else "not reproduced",
                    f"final entropy STEER {st['entropy_last']:.3f} vs GRPO {g['entropy_last']:.3f}; accuracy "
                    f"{st['accuracy_last']:.3f} vs {g['accuracy_last']:.3f}",
                )
            )
    return out


def tracing_verdicts(res: RunResult) -> list[dict[str, str]]:
    s = res.summary
    corr = s.get("pearson_base_post", {})
    if not corr or s.get("n_common", 0) < 5:
        return [
            _v(
                "Du et al. 2025",
                "post-training does not move where facts are stored",
                "inconclusive",
                f"only {s.get('n_common', 0)} facts known by both models",
            )
        ]
    vals = {k: v.get("class_map", float("nan")) for k, v in corr.items()}
    low = min(vals.values())
    peaks = s.get("mlp_peak", {})
    peak_txt = "; ".join(f"{r} MLP peak at {p['token_class']} L{p['layer']}" for r, p in peaks.items() if p)
    return [
        _v(
            "Du et al. 2025",
            "post-training does not move where facts are stored (causal tracing maps agree)",
            "reproduced" if low > 0.8 else "not reproduced" if low < 0.5 else "mixed",
            "Pearson of base and post AIE maps: "
            + ", ".join(f"{k} {v:.2f}" for k, v in vals.items())
            + f" over {s['n_common']} facts known by both ({s.get('n_known')}); {peak_txt} (reproduced: all > 0.8)",
        )
    ]


def patching_verdicts(res: RunResult) -> list[dict[str, str]]:
    s = res.summary
    acc = s.get("accuracy", {})
    comp = s.get("comparisons", {})
    fwd = comp.get("base_to_post_vs_post", {}).get("pearson", float("nan"))
    same = comp.get("base_vs_post", {}).get("pearson", float("nan"))
    verdict = "reproduced" if fwd > 0.8 else "not reproduced" if fwd < 0.5 else "mixed"
    if min(acc.values(), default=0) < 0.6:
        verdict = "inconclusive"  # the models do not judge these statements, so the maps carry no signal
    return [
        _v(
            "Du et al. 2025",
            "post-training adapts base representations (cross-model patching works)",
            verdict,
            f"Pearson base vs post maps {same:.2f}; base→post patched map vs post's own {fwd:.2f}; few-shot "
            "judgement accuracy " + ", ".join(f"{r} {a:.2f}" for r, a in acc.items()),
        )
    ]


def refusal_verdicts(res: RunResult) -> list[dict[str, str]]:
    s = res.summary
    rates = s.get("refusal_rate", {})
    cos = s.get("cosine_selected_directions", float("nan"))
    out = [
        _v(
            "Du et al. 2025",
            "the refusal direction differs between base and post",
            "reproduced" if cos < 0.5 else "not reproduced" if cos > 0.8 else "mixed",
            f"cosine of the selected base and post directions = {cos:.3f} (reproduced: < 0.5)",
        )
    ]
    diag = s.get("diagnostics", {}).get("post", {})
    add = rates.get("harmless.addition", {})
    own, fwd = add.get("post->post"), add.get("base->post")
    if own is not None and fwd is not None:
        verdict = "inconclusive" if own < 0.2 else "reproduced" if fwd < 0.5 * own else "not reproduced"
        evidence = (
            f"refusal induced on harmless prompts by adding the direction: base→post {fwd:.2f}, "
            f"post→post {own:.2f} (reproduced: base→post < half of post→post)"
        )
        if verdict == "inconclusive" and diag.get("addition_sweep"):
            evidence += "; the post model's own direction does not induce refusal at coefficient 1, so transfer " + (
                "cannot be judged. Generation-free harmless refusal scores (> 0: refusal more likely) with c·r added: "
                + "; ".join(
                    f"{name.replace('_', ' ')} candidate (layer {sw['layer']}) "
                    + ", ".join(f"c={c} {v:.2f}" for c, v in sw["induce_score"].items())
                    for name, sw in diag["addition_sweep"].items()
                )
            )
        out.append(
            _v(
                "Du et al. 2025",
                "the base refusal direction transfers poorly to the post model (forward)",
                verdict,
                evidence,
            )
        )
    abl = rates.get("harmful.ablation", {})
    if "post->post" in abl:
        base_rate = rates.get("harmful.baseline", {}).get("post", float("nan"))
        verdict = "reproduced" if abl["post->post"] < 0.5 * base_rate else "not reproduced"
        evidence = (
            f"post refusal on held-out harmful prompts: {base_rate:.2f} baseline, {abl['post->post']:.2f} "
            "with its own direction ablated at every layer and position"
        )
        if verdict == "not reproduced":
            evidence += _refusal_locus_evidence(diag, s.get("selected", {}).get("post", {}))
        out.append(
            _v(
                "Arditi et al. 2024",
                "ablating the refusal direction bypasses refusal in the post model",
                verdict,
                evidence,
            )
        )
    return out


def _refusal_locus_evidence(diag: dict[str, Any], selected: dict[str, Any]) -> str:
    """Why ablation did not bypass, when the run's diagnostics show that no candidate direction (nor their
    span) mediates refusal in this model."""
    from .probes._refusal_diagnostics import locus_summary

    all_c = diag.get("bypass_score_all_candidates", float("nan"))
    if not all_c > 0:
        return ""
    where = locus_summary(diag) if diag.get("locus") else ""
    return (
        ". A property of the model, not of the implementation: ablating the span of all "
        f"{diag.get('n_candidates')} candidate directions at every layer and position still leaves the validation "
        f"refusal score at {all_c:.2f} (baseline {selected.get('val_harmful_refusal_score', float('nan')):.2f}; "
        "> 0: still refusing)" + (". " + where.rstrip(".") if where else "")
    )


VERDICTS = {
    "causal_tracing": tracing_verdicts,
    "truth_patching": patching_verdicts,
    "truth": truth_verdicts,
    "refusal": refusal_verdicts,
    "neurons": neuron_verdicts,
    "rlvr_dynamics": dynamics_verdicts,
}


def new_knowledge_verdicts(toy_report: dict[str, Any]) -> list[dict[str, str]]:
    """Du et al.'s 'develops new knowledge representations', from the toy build's recall of facts taught only in SFT."""
    # report.json holds null where a rate was undefined (NaN): read it back as NaN
    fr = {k: float("nan") if v is None else v for k, v in toy_report.get("fact_recall", {}).items()}
    if "post_sft_new_facts" not in fr:
        return []
    base, post = fr["base_sft_new_facts"], fr["post_sft_new_facts"]
    verdict = "reproduced" if post >= 0.5 and post - base >= 0.3 else "not reproduced"
    return [
        _v(
            "Du et al. 2025",
            "post-training develops new knowledge (facts taught only in SFT are recalled by post, not by base)",
            verdict,
            f"recall of {fr.get('n_sft_new', '?')} SFT-only facts: base {base:.2f}, post {post:.2f}; of pretraining "
            f"facts: base {fr.get('base_pretrain_facts', float('nan')):.2f}, post "
            f"{fr.get('post_pretrain_facts', float('nan')):.2f} (reproduced: post ≥ 0.5 and ≥ base + 0.3)",
        )
    ]


def verdicts(results: dict[str, RunResult], toy_report: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """All verdicts that the given results (and the toy build's report, when given) support, in a fixed order:
    knowledge, truth, refusal, confidence (Du et al.), then entropy dynamics (Cui et al., Hao et al.)."""
    by_analysis = {res.analysis: res for res in results.values()}
    out: list[dict[str, str]] = []
    for analysis, fn in VERDICTS.items():
        if analysis in by_analysis:
            out += fn(by_analysis[analysis])
        if analysis == "truth_patching" and toy_report:
            out += new_knowledge_verdicts(toy_report)
    return out
