"""Verdicts of the entropy-neuron probe, from a saved result only."""

from __future__ import annotations

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Verdict


def _v(paper: str, claim: str, verdict: str, evidence: str, **numbers) -> Verdict:
    return Verdict(paper, claim, verdict, evidence, section="neurons", **numbers)


def _share_with_controls(v: dict) -> str:
    nan = float("nan")
    return (
        f"{v.get('share_both', nan):+.1%} (random controls {v.get('control_share_both_mean', nan):+.1%} "
        f"± {v.get('control_share_both_std', nan):.1%})"
    )


def verdicts(res: RunResult) -> list[Verdict]:
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
