"""Verdicts of the truth-direction probe, from a saved result only."""

from __future__ import annotations

from typing import Any

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Verdict


def _v(paper: str, claim: str, verdict: str, evidence: str, **numbers) -> Verdict:
    return Verdict(paper, claim, verdict, evidence, section="truth", **numbers)


def verdicts(res: RunResult) -> list[Verdict]:
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
