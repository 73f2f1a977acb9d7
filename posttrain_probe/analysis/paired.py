"""Effects of a paired multi-seed RLVR study, from a dynamics summary: each arm against its baseline, seed by seed.

The primary entropy measure is the held-out evaluation entropy, averaged over the last k evaluations after step 0
(`eval_entropy_last_k` in the dynamics summary); runs without evaluations fall back to the last training batch
(`entropy_last`), and the table says which measure it used. For every arm that has its baseline in the study,
per seed k (paired: same prompts and sampling uniforms):

    ratio_k    = H(arm, k) / H(baseline, k)             final entropy relative to the baseline
    acc_diff_k = acc(arm, k) − acc(baseline, k)         final held-out accuracy (sampled, T = 1) difference

and their means with Student-t 95% intervals over seeds. The null arm (GRPO with lr × 1.01) has GRPO as its
baseline, so its row is what chaos alone does to the ratio.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from posttrain_probe.rlvr.paired import arm_info, parse_label
from posttrain_probe.verdict import seed_ci

COLUMNS = (
    "arm", "baseline", "method", "dose_param", "dose_value", "n_seeds", "seeds", "measure",
    "entropy_ratio", "ratio_lo", "ratio_hi", "acc_diff", "acc_lo", "acc_hi", "entropy", "baseline_entropy",
)  # fmt: skip


def groups(summary: dict[str, Any]) -> dict[str, dict[int, str]]:
    """{arm: {seed: run label}} of the runs of a dynamics summary (labels '<arm>_seed<k>'; a bare label is seed 0)."""
    out: dict[str, dict[int, str]] = {}
    for run, v in summary.items():
        if isinstance(v, dict) and "entropy_last" in v:
            arm, k = parse_label(run)
            out.setdefault(arm, {})[k] = run
    return out


def measure(summary: dict[str, Any], runs: list[str]) -> str:
    """'eval' when every run has held-out evaluations after step 0, else 'train' (the last training batch)."""
    ok = all(math.isfinite(summary[r].get("eval_entropy_last_k", math.nan)) for r in runs)
    return "eval" if runs and ok else "train"


def final_entropy(row: dict[str, Any], how: str) -> float:
    return float(row["eval_entropy_last_k"] if how == "eval" else row["entropy_last"])


def final_accuracy(row: dict[str, Any], how: str) -> float:
    return float(row["eval_accuracy_last_k"] if how == "eval" else row["accuracy_last"])


def paired_effects(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per arm whose baseline is in the study (columns `COLUMNS`), sorted by method, dose and arm."""
    g = groups(summary)
    rows = []
    for arm, runs in sorted(g.items()):
        info = arm_info(arm)
        base = g.get(info.baseline)
        if base is None or info.baseline == arm:
            continue
        seeds = sorted(set(runs) & set(base))
        if not seeds:
            continue
        how = measure(summary, [runs[k] for k in seeds] + [base[k] for k in seeds])
        h = np.array([final_entropy(summary[runs[k]], how) for k in seeds])
        hb = np.array([final_entropy(summary[base[k]], how) for k in seeds])
        ratios = np.where(hb > 0, h / np.where(hb > 0, hb, 1.0), np.nan)
        diffs = [final_accuracy(summary[runs[k]], how) - final_accuracy(summary[base[k]], how) for k in seeds]
        r, a = seed_ci(ratios), seed_ci(diffs)
        rows.append(
            {
                "arm": arm,
                "baseline": info.baseline,
                "method": info.method or "",
                "dose_param": info.dose[0] if info.dose else "",
                "dose_value": info.dose[1] if info.dose else math.nan,
                "n_seeds": len(seeds),
                "seeds": ",".join(map(str, seeds)),
                "measure": how,
                "entropy_ratio": r[0],
                "ratio_lo": _num(r[1]),
                "ratio_hi": _num(r[2]),
                "acc_diff": a[0],
                "acc_lo": _num(a[1]),
                "acc_hi": _num(a[2]),
                "entropy": float(np.mean(h)),
                "baseline_entropy": float(np.mean(hb)),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def dose_table(summary: dict[str, Any], effects: pd.DataFrame | None = None) -> pd.DataFrame:
    """The dose–response rows: for every (method, dose_param) swept, each dose with its effect row. A method's
    plain arm counts at its preset value for each swept parameter (read from the run's loss config)."""
    eff = paired_effects(summary) if effects is None else effects
    swept = eff[eff.dose_param != ""]
    out = []
    for (method, param), sub in swept.groupby(["method", "dose_param"], sort=True):
        plain = eff[(eff.arm == method) & (eff.dose_param == "")]
        rows = [*sub.to_dict("records")]
        if len(plain) and not (sub.arm == method).any():
            value = _loss_value(summary, method, param)
            if value is not None and value not in set(sub.dose_value):
                rows.append({**plain.iloc[0].to_dict(), "dose_param": param, "dose_value": value})
        out += sorted(rows, key=lambda r: r["dose_value"])
    return pd.DataFrame(out, columns=list(COLUMNS))


def _loss_value(summary: dict[str, Any], arm: str, param: str) -> float | None:
    for run, v in summary.items():
        if isinstance(v, dict) and parse_label(run)[0] == arm and isinstance(v.get("loss"), dict):
            value = v["loss"].get(param)
            return float(value) if isinstance(value, int | float) else None
    return None


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


__all__ = ["COLUMNS", "dose_table", "final_accuracy", "final_entropy", "groups", "measure", "paired_effects"]
