"""A verdict on one of the papers' claims, and the rule that turns an estimate with its interval into a word.

The rule (one for every quantitative claim): a claim "estimate > threshold" (or "<") is *reproduced* when the
whole confidence interval lies on the claim's side of the threshold, *refuted* when the whole interval lies on the
other side, and *inconclusive* otherwise (also when the estimate or its interval is undefined). Intervals come
from seeds where several runs exist and from a bootstrap over items where one model instance exists.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

WORDS = ("reproduced", "refuted", "inconclusive")
FIELDS = ("paper", "claim", "verdict", "estimate", "ci_low", "ci_high", "n", "threshold", "rule")


def judge(ci_low: float | None, ci_high: float | None, threshold: float, holds_when: str = ">") -> str:
    """The word for a claim "quantity `holds_when` threshold" from its interval [ci_low, ci_high]."""
    if holds_when not in (">", "<"):
        raise ValueError(f"holds_when={holds_when!r}; use '>' or '<'")
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "inconclusive"
    above, below = ci_low > threshold, ci_high < threshold
    if holds_when == ">":
        return "reproduced" if above else "refuted" if below else "inconclusive"
    return "reproduced" if below else "refuted" if above else "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """One claim as measured here: the word, the numbers that decided it, and the evidence in words.
    `section` is the registry name of the analysis it comes from (the report links the row to it)."""

    paper: str
    claim: str
    verdict: str
    evidence: str
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    threshold: float | None = None
    rule: str = ""
    section: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become null)."""
        d = asdict(self)
        for k in ("estimate", "ci_low", "ci_high", "threshold"):
            v = d[k]
            d[k] = None if v is None or not math.isfinite(float(v)) else float(v)
        return d

    def __getitem__(self, key: str) -> Any:  # read like the dict rows it replaces
        return getattr(self, key)
