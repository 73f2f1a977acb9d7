"""Entropy dynamics of RLVR runs: the entropy–performance law and the covariance predictors of ΔH.

Pure functions over arrays (tested against closed forms), plus `analyze_runs`, which reads the trainer's
`metrics.jsonl` (one row per step) and optional per-token dumps and returns a `RunResult`.

- Entropy–performance law (Cui et al. 2025): R = −a·exp(H) + b fitted by least squares (linear in a, b, so the
  fit is exact and closed-form); the predicted ceiling is R at H = 0, i.e. b − a.
- Predictors of the realized entropy change: per step, the change predicted from the covariance
  (−Cov(log π, A)-style) against the measured ΔH on the same tokens; per token, Cov_i and STEER's Ω_i against the
  realized per-token ΔH.
- Quadrants (Hao et al.): tokens split by p vs e^{−H} (a token more likely than the "typical" one) and by the
  sign of A; positive A on a high-probability token and negative A on a low-probability one lower entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class EntropyLawFit:
    a: float
    b: float
    r2: float
    n: int

    @property
    def ceiling(self) -> float:
        """Predicted performance when entropy is exhausted (H = 0): b − a."""
        return self.b - self.a

    def predict(self, entropy: np.ndarray) -> np.ndarray:
        return -self.a * np.exp(np.asarray(entropy, dtype=float)) + self.b

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "r2": self.r2, "n": self.n, "ceiling": self.ceiling}


def fit_entropy_law(entropy: np.ndarray, reward: np.ndarray) -> EntropyLawFit:
    """Least-squares fit of R = −a·exp(H) + b."""
    h = np.asarray(entropy, dtype=float)
    r = np.asarray(reward, dtype=float)
    ok = np.isfinite(h) & np.isfinite(r)
    h, r = h[ok], r[ok]
    if len(h) < 3:
        raise ValueError(f"need at least 3 finite (entropy, reward) points to fit the law, got {len(h)}")
    X = np.stack([-np.exp(h), np.ones_like(h)], axis=1)  # (N, 2)
    (a, b), *_ = np.linalg.lstsq(X, r, rcond=None)
    pred = X @ np.array([a, b])
    ss_res = float(((r - pred) ** 2).sum())
    ss_tot = float(((r - r.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return EntropyLawFit(float(a), float(b), r2, len(h))


def extrapolation_error(entropy: np.ndarray, reward: np.ndarray, fit_fraction: float) -> dict:
    """Fit on the first `fit_fraction` of steps, predict the rest: MAE, RMSE, and the ceiling vs final reward."""
    if not 0 < fit_fraction < 1:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    h = np.asarray(entropy, dtype=float)
    r = np.asarray(reward, dtype=float)
    k = max(3, int(round(fit_fraction * len(h))))
    if k >= len(h):
        raise ValueError(f"{len(h)} steps are too few to hold out the last {1 - fit_fraction:.0%}")
    fit = fit_entropy_law(h[:k], r[:k])
    err = fit.predict(h[k:]) - r[k:]
    return {
        "fit_fraction": fit_fraction,
        "n_fit": k,
        "n_predicted": len(h) - k,
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "ceiling": fit.ceiling,
        "final_reward": float(r[-1]),
        **{f"fit_{key}": v for key, v in fit.as_dict().items() if key != "ceiling"},
    }


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (same length; the first window−1 entries average what exists)."""
    x = np.asarray(x, dtype=float)
    if window <= 1:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def predictor_agreement(predicted: np.ndarray, realized: np.ndarray) -> dict:
    """Pearson, Spearman, MSE and sign agreement of a predictor of ΔH against the realized ΔH."""
    p = np.asarray(predicted, dtype=float)
    y = np.asarray(realized, dtype=float)
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    out = {"n": int(len(p))}
    if len(p) < 3 or np.std(p) == 0 or np.std(y) == 0:
        return {
            **out,
            "pearson": float("nan"),
            "spearman": float("nan"),
            "mse": float("nan"),
            "sign_agreement": float("nan"),
        }
    out["pearson"] = float(stats.pearsonr(p, y).statistic)
    out["spearman"] = float(stats.spearmanr(p, y).statistic)
    out["mse"] = float(((p - y) ** 2).mean())
    nz = (p != 0) & (y != 0)
    out["sign_agreement"] = float((np.sign(p[nz]) == np.sign(y[nz])).mean()) if nz.any() else float("nan")
    return out


def quadrant_labels(prob: np.ndarray, entropy: np.ndarray, advantage: np.ndarray) -> np.ndarray:
    """Per token: 'high_p/A+', 'high_p/A-', 'low_p/A+', 'low_p/A-' (high_p: p > e^{−H}); '' when A == 0."""
    p = np.asarray(prob, dtype=float)
    h = np.asarray(entropy, dtype=float)
    a = np.asarray(advantage, dtype=float)
    hi = np.where(p > np.exp(-h), "high_p", "low_p")
    sign = np.where(a > 0, "A+", np.where(a < 0, "A-", ""))
    return np.where(sign == "", "", np.char.add(np.char.add(hi, "/"), sign))


def quadrant_table(prob, entropy, advantage, realized_dh) -> list[dict]:
    """Mean realized ΔH, count and share of tokens per quadrant. Theory: high_p/A+ and low_p/A− lower entropy."""
    labels = quadrant_labels(prob, entropy, advantage)
    y = np.asarray(realized_dh, dtype=float)
    rows = []
    for q in ("high_p/A+", "high_p/A-", "low_p/A+", "low_p/A-"):
        m = labels == q
        rows.append(
            {
                "quadrant": q,
                "n_tokens": int(m.sum()),
                "share": float(m.mean()) if len(m) else float("nan"),
                "mean_realized_dH": float(y[m].mean()) if m.any() else float("nan"),
                "sum_realized_dH": float(y[m].sum()) if m.any() else 0.0,
                "theory_sign": -1 if q in ("high_p/A+", "low_p/A-") else 1,
            }
        )
    return rows
