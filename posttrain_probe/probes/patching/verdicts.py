"""Verdicts of true/false and cross-model patching, from a saved result only."""

from __future__ import annotations

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Verdict


def _v(paper: str, claim: str, verdict: str, evidence: str, **numbers) -> Verdict:
    return Verdict(paper, claim, verdict, evidence, section="patching", **numbers)


def verdicts(res: RunResult) -> list[Verdict]:
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
