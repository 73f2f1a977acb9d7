"""Verdicts of causal tracing, from a saved result only."""

from __future__ import annotations

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Verdict


def _v(paper: str, claim: str, verdict: str, evidence: str, **numbers) -> Verdict:
    return Verdict(paper, claim, verdict, evidence, section="tracing", **numbers)


def verdicts(res: RunResult) -> list[Verdict]:
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
