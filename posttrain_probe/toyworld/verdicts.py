"""The verdict the toy build itself decides: Du et al.'s "post-training develops new knowledge", from its report.

The toy report holds recall fractions, not per-fact outcomes, so the interval is the normal (Wald) 95% interval
of a difference of two proportions over the n SFT-only facts (unpaired, hence conservative for the same facts).
"""

from __future__ import annotations

import math
from typing import Any

from posttrain_probe.verdict import Verdict, decide, fmt_ci

THRESHOLD = 0.3  # post recall − base recall of facts taught only in SFT
POST_MIN = 0.5  # post must recall them: its recall's interval above this
Z = 1.959964


def _wald(p: float, n: int) -> tuple[float, float | None, float | None]:
    if not n:
        return p, None, None
    h = Z * math.sqrt(max(p * (1 - p), 0.0) / n)
    return p, p - h, p + h


def new_knowledge_verdicts(toy_report: dict[str, Any]) -> list[Verdict]:
    """Du et al.'s 'develops new knowledge representations', from the toy build's recall of facts taught only in SFT."""
    # report.json holds null where a rate was undefined (NaN): read it back as NaN
    fr = {k: float("nan") if v is None else v for k, v in toy_report.get("fact_recall", {}).items()}
    if "post_sft_new_facts" not in fr:
        return []
    base, post = fr["base_sft_new_facts"], fr["post_sft_new_facts"]
    n = int(fr.get("n_sft_new") or 0)
    h = Z * math.sqrt((base * (1 - base) + post * (1 - post)) / n) if n else math.nan
    diff = (post - base, post - base - h, post - base + h) if n else (post - base, None, None)
    post_iv = _wald(post, n)
    rule = (
        f"post − base recall of the {n or '?'} SFT-only facts with its 95% normal interval (difference of two "
        f"proportions; the toy report has no per-fact outcomes) entirely above {THRESHOLD}; needs post's recall "
        f"interval above {POST_MIN}"
    )
    evidence = (
        f"recall of {n or '?'} SFT-only facts: base {base:.2f}, post {fmt_ci(post_iv)}; difference {fmt_ci(diff)}; "
        f"of pretraining facts: base {fr.get('base_pretrain_facts', math.nan):.2f}, post "
        f"{fr.get('post_pretrain_facts', math.nan):.2f}"
    )
    guard = None
    if post_iv[1] is None or not post_iv[1] > POST_MIN:
        guard = f"the post model does not clearly recall the SFT-only facts (recall interval not above {POST_MIN})"
    claim = "post-training develops new knowledge (facts taught only in SFT are recalled by post, not by base)"
    return [decide("Du et al. 2025", claim, diff, n or None, THRESHOLD, rule, evidence, "patching", guard=guard)]
