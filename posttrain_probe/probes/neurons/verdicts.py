"""Verdicts of the entropy-neuron probe, from a saved result only.

"Confidence differences are not explained by entropy neurons" is judged on the largest |share| of the base→post
entropy gap removed by mean-ablating a selected set (total effects, own selections). The run saves no per-text
ablation effects, so the uncertainty is the spread of the random control sets of the same size: each share's
interval is share ± 1.96·(control std), and the interval of the largest |share| runs from the largest lower to
the largest upper end. The claim also needs a gap to explain.
"""

from __future__ import annotations

import math

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Verdict, decide, fmt_ci

PAPER = "Du et al. 2025"
CLAIM = "confidence differences between base and post are not explained by entropy neurons"
THRESHOLD = 0.2  # |share of the gap removed| below this: not explained
MIN_GAP = 0.01  # nats
Z = 1.959964


def _share_with_controls(v: dict) -> str:
    nan = float("nan")
    return (
        f"{v.get('share_both', nan):+.1%} (random controls {v.get('control_share_both_mean', nan):+.1%} "
        f"± {v.get('control_share_both_std', nan):.1%})"
    )


def share_interval(judged: dict[str, dict]) -> tuple[float, float | None, float | None]:
    """(max |share|, lo, hi) with each share's interval |share| ± Z·control std (lo clipped at 0)."""
    if not judged:
        return math.nan, None, None
    est, lo, hi = -math.inf, -math.inf, -math.inf
    for v in judged.values():
        a = abs(v.get("share_both", math.nan))
        sd = v.get("control_share_both_std", math.nan)
        if not (math.isfinite(a) and math.isfinite(sd)):
            return max(est, a), None, None
        est, lo, hi = max(est, a), max(lo, max(a - Z * sd, 0.0)), max(hi, a + Z * sd)
    return est, lo, hi


def verdicts(res: RunResult) -> list[Verdict]:
    s = res.summary
    shares = {k: v for k, v in s.get("explained_share", {}).items() if "_own_" in k}
    judged = {k: v for k, v in shares.items() if k.endswith("_total")}
    if not judged:
        return []
    iv = share_interval(judged)
    h_base = s.get("base", {}).get("entropy", math.nan)
    h_post = s.get("post", {}).get("entropy", math.nan)
    gap = abs(h_post - h_base)
    rule = (
        f"largest |share of the base→post entropy gap| removed by ablating a selected set (total effects) with "
        f"its 95% interval entirely below {THRESHOLD}; the interval is share ± 1.96 × the std of {len(judged)} "
        f"rules' random control sets of the same size (no per-text effects are saved); needs a gap > {MIN_GAP} nats"
    )
    evidence = (
        "share of the base→post entropy gap removed by ablating the selected set: "
        + ", ".join(f"{k} {_share_with_controls(v)}" for k, v in shares.items())
        + f"; largest |share| of total effects {fmt_ci(iv)}; entropy base {h_base:.3f}, post {h_post:.3f} nats"
    )
    guard = None if gap > MIN_GAP else f"the gap ({gap:.3f} nats) is too small to explain"
    return [decide(PAPER, CLAIM, iv, len(judged), THRESHOLD, rule, evidence, "neurons", "<", guard)]
