"""A verdict on one of the papers' claims, and the rule that turns an estimate with its interval into a word.

The rule (one for every quantitative claim): a claim "estimate > threshold" (or "<") is *reproduced* when the
whole confidence interval lies on the claim's side of the threshold, *refuted* when the whole interval lies on the
other side, and *inconclusive* otherwise (also when the estimate or its interval is undefined). Intervals come
from seeds where several runs exist and from a bootstrap over items where one model instance exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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


# ---------------------------------------------------------------------------------------------- intervals

Interval = tuple[float, float | None, float | None]  # (estimate, ci_low, ci_high); None: no interval


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(float(x))


def bootstrap_ci(
    stat: Callable[[np.ndarray], float] | Sequence[float] | np.ndarray,
    n_items: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> Interval:
    """Percentile bootstrap over items: (estimate, lo, hi).

    `stat` is either per-item values (the statistic is their mean; NaN items are dropped) or a function of an
    index array into the `n_items` items (called with `arange(n_items)` for the estimate and with each
    resample drawn with replacement). Resamples whose statistic is undefined are dropped; with fewer than
    2 items, or when under half of the resamples are defined, the bounds are None."""
    if not callable(stat):
        vals = np.asarray(stat, dtype=float)
        vals = vals[np.isfinite(vals)]
        n_items = len(vals)
        stat = lambda idx, v=vals: float(v[idx].mean()) if len(idx) else math.nan  # noqa: E731
    if n_items is None:
        raise ValueError("give n_items with a statistic function")
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci} must be in (0, 1), e.g. 0.95")
    est = float(stat(np.arange(n_items))) if n_items else math.nan
    if n_items < 2 or n_boot < 1:
        return est, None, None
    rng = np.random.default_rng(seed)
    boot = np.array([stat(rng.integers(0, n_items, n_items)) for _ in range(n_boot)], dtype=float)
    boot = boot[np.isfinite(boot)]
    if len(boot) < n_boot / 2:
        return est, None, None
    a = (1 - ci) / 2
    return est, float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def seed_ci(values: Sequence[float], ci: float = 0.95) -> Interval:
    """Mean over seeds (runs) with its Student-t interval: (mean, lo, hi); bounds None with < 2 finite values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, None, None
    m = float(v.mean())
    if len(v) < 2:
        return m, None, None
    half = float(stats.t.ppf(0.5 + ci / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def decide(
    paper: str,
    claim: str,
    interval: Interval,
    n: int | None,
    threshold: float,
    rule: str,
    evidence: str,
    section: str,
    holds_when: str = ">",
    guard: str | None = None,
) -> Verdict:
    """The `Verdict` of a claim "quantity `holds_when` threshold" from (estimate, lo, hi): the word is
    `judge`'s, except that a failed evidence `guard` (its reason as text) makes it inconclusive and is appended
    to the evidence."""
    est, lo, hi = interval
    word = judge(lo, hi, threshold, holds_when)
    if guard:
        word = "inconclusive"
        evidence = f"{evidence}. Inconclusive because {guard}"
    return Verdict(
        paper,
        claim,
        word,
        evidence,
        estimate=est,
        ci_low=lo if _finite(lo) else None,
        ci_high=hi if _finite(hi) else None,
        n=n,
        threshold=threshold,
        rule=rule,
        section=section,
    )


def fmt_ci(interval: Interval, spec: str = ".2f") -> str:
    """'0.83 [0.71, 0.90]' (or '0.83 [no interval]')."""
    est, lo, hi = interval
    e = format(est, spec) if _finite(est) else "n/a"
    if not (_finite(lo) and _finite(hi)):
        return f"{e} [no interval]"
    return f"{e} [{format(lo, spec)}, {format(hi, spec)}]"


def moments(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sufficient statistics (n, Σx, Σy, Σx², Σy², Σxy) of the cells finite in both `x` and `y` (any shape):
    one item's row for `pooled_pearson`."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    return np.array([len(x), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])


def pooled_pearson(rows: np.ndarray, idx: np.ndarray) -> float:
    """Pearson over the pooled cells of the items `idx` (repeats allowed) from their `moments` rows (F, 6):
    equal to the Pearson of the concatenated cells; NaN with < 3 cells or zero variance."""
    n, sx, sy, sxx, syy, sxy = rows[idx].sum(0) if len(idx) else np.zeros(6)
    if n < 3:
        return math.nan
    vx, vy = sxx - sx * sx / n, syy - sy * sy / n
    if not (vx > 1e-300 and vy > 1e-300):
        return math.nan
    return float((sxy - sx * sy / n) / math.sqrt(vx * vy))
