"""Verdicts of the RLVR entropy-dynamics analysis (Cui et al. 2025, Hao et al. 2025), from a saved result only.

Runs are grouped into arms by their label: `<arm>_seed<k>` (seed k; a bare label is seed 0; `rlvr.paired`). Where an
arm has several runs (a paired multi-seed study), a claim's interval is the Student-t 95% interval over seeds
(ratios paired by seed) of the held-out evaluation measures (`analysis.paired`; the last training batch when a run
has no evaluation after step 0); where it has one, the interval is a percentile bootstrap over that run's training
steps (step noise only; the rule text says so).

Noise calibration: when the study has a null arm (GRPO with lr × 1.01, `rlvr.paired.ARMS["null"]`), an
intervention must keep entropy higher than GRPO by more than chaos alone does: its ratio's interval must lie above
max(1, the upper end of the null arm's interval).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from posttrain_probe.analysis.paired import groups, paired_effects
from posttrain_probe.results import RunResult
from posttrain_probe.rlvr.paired import parse_label
from posttrain_probe.verdict import Interval, Verdict, bootstrap_ci, decide, fmt_ci, seed_ci

CUI, HAO = "Cui et al. 2025", "Hao et al. 2025 (STEER)"
DROP_THRESHOLD = 0.3  # entropy drop fraction
R2_THRESHOLD = 0.8
COV_SHARE_THRESHOLD = 0.5  # "mostly positive": more than half of the steps
KEEP_THRESHOLD = 1.0  # final entropy / GRPO's: "higher"
N_BOOT = 1000
NAN_IV: Interval = (math.nan, None, None)


def arm_of(label: str) -> tuple[str, int]:
    """('grpo', 3) for 'grpo_seed3'; ('grpo', 0) for 'grpo'."""
    return parse_label(label)


def arms(summary: dict[str, Any]) -> dict[str, dict[int, str]]:
    """{arm: {seed: run label}} of the runs in a dynamics summary."""
    return groups(summary)


def window(n_steps: int) -> int:
    """Steps averaged at the start and the end of a run: a tenth of the run, at least 3 (at most half)."""
    return max(1, min(max(3, n_steps // 10), n_steps // 2))


def _curve(res: RunResult, label: str) -> pd.DataFrame:
    c = res.tables.get("curves")
    return c[c.run == label].sort_values("step") if c is not None else pd.DataFrame()


def _over_seeds(summary: dict, runs: dict[int, str], fn: Callable[[dict], float]) -> Interval:
    return seed_ci([fn(summary[label]) for label in runs.values()])


def _step_boot(n: int, stat: Callable[[np.ndarray], float], seed: int) -> Interval:
    return bootstrap_ci(stat, n, N_BOOT, seed)


def _trajectory(row: dict[str, Any]) -> str:
    """First → final entropy and accuracy of one run, on the held-out eval set where it has one."""
    if math.isfinite(row.get("eval_entropy_drop_frac", math.nan)):
        return (
            f"held-out entropy {row['eval_entropy_first']:.3f} → {row['eval_entropy_last_k']:.3f}, accuracy (T = 1) "
            f"{row['eval_accuracy_first']:.3f} → {row['eval_accuracy_last_k']:.3f}"
        )
    return (
        f"training-batch entropy {row['entropy_first']:.3f} → {row['entropy_last']:.3f}, accuracy "
        f"{row['accuracy_first']:.3f} → {row['accuracy_last']:.3f}"
    )


def collapse(res: RunResult, runs: dict[int, str]) -> tuple[Interval, Interval, str]:
    """(entropy drop fraction, accuracy rise, how) for the GRPO arm."""
    s = res.summary
    if len(runs) > 1:
        if all(math.isfinite(s[r].get("eval_entropy_drop_frac", math.nan)) for r in runs.values()):
            drop = _over_seeds(s, runs, lambda g: g["eval_entropy_drop_frac"])
            rise = _over_seeds(s, runs, lambda g: g["eval_accuracy_last_k"] - g["eval_accuracy_first"])
            k = s[next(iter(runs.values()))].get("eval_k", "?")
            return (
                drop,
                rise,
                (
                    f"Student-t 95% CI over {len(runs)} seeds (held-out eval set: step 0 vs the mean of the last {k} "
                    "evaluations)"
                ),
            )
        drop = _over_seeds(s, runs, lambda g: g["entropy_drop_frac"])
        rise = _over_seeds(s, runs, lambda g: g["accuracy_last"] - g["accuracy_first"])
        return drop, rise, f"Student-t 95% CI over {len(runs)} seeds (first and last training step)"
    df = _curve(res, next(iter(runs.values())))
    if len(df) < 2:
        return NAN_IV, NAN_IV, "no curve"
    w = window(len(df))
    h, a = df.entropy_mean.to_numpy(float), df.accuracy.to_numpy(float)

    def drop(idx: np.ndarray) -> float:
        first = h[:w][idx].mean()
        return float(1 - h[-w:][idx].mean() / first) if first > 0 else math.nan

    def rise(idx: np.ndarray) -> float:
        return float(a[-w:][idx].mean() - a[:w][idx].mean())

    how = f"95% bootstrap CI over the first and last {w} steps of one run (step noise only, no seed replicates)"
    return _step_boot(w, drop, 1), _step_boot(w, rise, 2), how


def entropy_law(res: RunResult, runs: dict[int, str]) -> tuple[Interval, str]:
    s = res.summary
    if len(runs) > 1:
        return _over_seeds(s, runs, lambda g: g["law_r2"]), f"Student-t 95% CI over {len(runs)} seeds"
    label = next(iter(runs.values()))
    df = _curve(res, label)
    if len(df) < 3:
        return (s[label]["law_r2"], None, None), "no curve saved, so no interval"
    x, r = np.exp(df.entropy_mean.to_numpy(float)), df.accuracy.to_numpy(float)

    def r2(idx: np.ndarray) -> float:
        xs, rs = x[idx], r[idx]
        if xs.std() == 0 or rs.std() == 0:
            return math.nan
        return float(np.corrcoef(xs, rs)[0, 1] ** 2)  # R² of the least-squares fit R = −a·e^H + b

    est, lo, hi = _step_boot(len(df), r2, 3)
    return (s[label]["law_r2"], lo, hi), f"95% bootstrap CI over the {len(df)} steps of one run (no seed replicates)"


def cov_positive(res: RunResult, runs: dict[int, str]) -> tuple[Interval, str]:
    s = res.summary
    if len(runs) > 1:
        return _over_seeds(s, runs, lambda g: g["share_steps_cov_positive"]), f"Student-t 95% CI over {len(runs)} seeds"
    df = _curve(res, next(iter(runs.values())))
    if "cov_mean" not in df or df.empty:
        return NAN_IV, "no covariance logged"
    pos = (df.cov_mean.to_numpy(float) > 0).astype(float)
    return bootstrap_ci(pos, n_boot=N_BOOT, seed=4), f"95% bootstrap CI over the {len(df)} steps of one run"


def entropy_ratio(res: RunResult, arm: dict[int, str], grpo: dict[int, str], seed: int) -> tuple[Interval, str]:
    """Final entropy of `arm` / its baseline's: over paired seeds (`analysis.paired`), or over the last steps of
    one run each (paired by step: the same prompts and sampling seeds per step)."""
    paired = sorted(set(arm) & set(grpo))
    if len(paired) > 1:
        row = _effect(res, parse_label(arm[paired[0]])[0])
        if row is not None:
            what = "held-out eval entropy, mean of the last evaluations" if row["measure"] == "eval" else "last step"
            iv = (row["entropy_ratio"], _opt(row["ratio_lo"]), _opt(row["ratio_hi"]))
            return iv, f"Student-t 95% CI over {int(row['n_seeds'])} paired seeds ({what})"
    a, g = _curve(res, arm[min(arm)]), _curve(res, grpo[min(grpo)])
    n = min(len(a), len(g))
    if n < 2:
        return NAN_IV, "no curves"
    w = window(n)
    ha, hg = a.entropy_mean.to_numpy(float)[n - w : n], g.entropy_mean.to_numpy(float)[n - w : n]

    def ratio(idx: np.ndarray) -> float:
        d = hg[idx].mean()
        return float(ha[idx].mean() / d) if d > 0 else math.nan

    return _step_boot(w, ratio, seed), f"95% bootstrap CI over the last {w} steps, paired by step (one seed each)"


def _effect(res: RunResult, arm: str) -> dict[str, Any] | None:
    t = res.tables.get("paired")
    t = t if t is not None else paired_effects(res.summary)
    rows = t[t.arm == arm]
    return rows.iloc[0].to_dict() if len(rows) else None


def _opt(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def null_calibration(res: RunResult) -> tuple[float, str]:
    """(threshold, text): the "keeps entropy higher" threshold max(1, upper end of the null arm's ratio CI) and a
    sentence on the null arm; (1, '') without a multi-seed null arm."""
    row = _effect(res, "null")
    if row is None or _opt(row["ratio_hi"]) is None:
        return KEEP_THRESHOLD, ""
    iv = (row["entropy_ratio"], row["ratio_lo"], row["ratio_hi"])
    return max(KEEP_THRESHOLD, float(row["ratio_hi"])), (
        f"null arm (GRPO, lr × 1.01; chaos alone): {fmt_ci(iv)}× GRPO's over {int(row['n_seeds'])} seeds"
    )


def _keep_verdict(
    res: RunResult, paper: str, claim: str, name: str, arm: dict[int, str], base: dict[int, str], base_name: str,
    seed: int,
) -> Verdict:  # fmt: skip
    """`name` keeps entropy higher than its baseline": the ratio interval against the noise-calibrated threshold."""
    iv, how = entropy_ratio(res, arm, base, seed)
    multi = len(set(arm) & set(base)) > 1
    thr, null_text = null_calibration(res) if multi else (KEEP_THRESHOLD, "")
    rule = f"final entropy of {name} / {base_name}'s with its {how} entirely above "
    rule += f"max(1, the null arm's upper CI bound) = {thr:.3f}" if null_text else f"{KEEP_THRESHOLD}"
    evidence = f"{name}: final entropy {fmt_ci(iv)}× {base_name}'s (same prompts and sampling seeds per step)"
    row = _effect(res, parse_label(arm[min(arm)])[0]) if multi else None
    if row is not None:
        acc = (row["acc_diff"], _opt(row["acc_lo"]), _opt(row["acc_hi"]))
        evidence += f"; accuracy difference {fmt_ci(acc, '+.3f')}"
    if null_text:
        evidence += f"; {null_text}"
    return decide(paper, claim, iv, len(arm), thr, rule, evidence, "dynamics")


def omega_vs_cov(res: RunResult) -> tuple[Interval, int, str]:
    """Pearson(−Ω, ΔH) − Pearson(−Cov, ΔH) per run, with a Student-t interval over runs. Where the runs logged the
    single-step probe (RLVRConfig.probe_first_minibatch), ΔH is the entropy change of one optimizer step on that
    mini-batch's own tokens (like with like, table `token_predictors_single_step`); else the realized change over
    the whole rollout batch (several steps, every token's gradient)."""
    single = res.tables.get("token_predictors_single_step")
    tp = single if single is not None and len(single) else res.tables.get("token_predictors")
    rows = {(r.run, r.predictor): r.pearson for r in tp.itertuples()}
    runs = sorted({r for r, _ in rows})
    diffs = [rows.get((r, "-omega"), math.nan) - rows.get((r, "-cov"), math.nan) for r in runs]
    ceiling = ""
    if tp is single:
        fo = seed_ci([rows.get((r, "first_order"), math.nan) for r in runs])
        ceiling = f"; exact first-order term (ceiling) {fmt_ci(fo)}"
    om = seed_ci([rows.get((r, "-omega"), math.nan) for r in runs])
    cv = seed_ci([rows.get((r, "-cov"), math.nan) for r in runs])
    what = "one optimizer step, own mini-batch" if tp is single else "whole rollout batch, several steps"
    text = f"mean over {len(runs)} runs ({what}): Ω {fmt_ci(om)} vs Cov {fmt_ci(cv)}{ceiling}"
    return seed_ci(diffs), len(runs), text


def dynamics_verdicts(res: RunResult) -> list[Verdict]:
    s = res.summary
    groups = arms(s)
    grpo = groups.get("grpo")
    out: list[Verdict] = []

    def v(paper: str, claim: str, iv: Interval, n: int, thr: float, rule: str, ev: str, guard: str | None = None):
        out.append(decide(paper, claim, iv, n, thr, rule, ev, "dynamics", guard=guard))

    if grpo and all(s[r]["accuracy_first"] == 0 and s[r]["accuracy_last"] == 0 for r in grpo.values()):
        g = s[next(iter(grpo.values()))]
        return [
            decide(
                f"{CUI} / {HAO}",
                "entropy dynamics claims",
                NAN_IV,
                len(grpo),
                math.nan,
                "needs a learning signal",
                f"GRPO accuracy 0 at the first and last step over {g['steps']} steps",
                "dynamics",
                guard="GRPO never earned a reward: no learning signal to study",
            )
        ]
    if grpo:
        first = s[grpo[min(grpo)]]
        drop, rise, how = collapse(res, grpo)
        v(
            CUI,
            "without intervention, entropy collapses while performance rises",
            drop,
            len(grpo),
            DROP_THRESHOLD,
            f"entropy drop fraction of GRPO with its {how} entirely above {DROP_THRESHOLD}; needs the accuracy rise "
            "CI above 0",
            f"GRPO: {_trajectory(first)} over {first['steps']} steps (seed {min(grpo)}); drop {fmt_ci(drop)}, "
            f"accuracy rise {fmt_ci(rise)}",
            None if rise[1] is not None and rise[1] > 0 else "accuracy does not clearly rise (CI not above 0)",
        )
        law, how = entropy_law(res, grpo)
        v(
            CUI,
            "R = −a·exp(H) + b fits performance against entropy",
            law,
            len(grpo),
            R2_THRESHOLD,
            f"R² of the GRPO fit with its {how} entirely above {R2_THRESHOLD}",
            f"GRPO fit a = {first['law_a']:.3f}, b = {first['law_b']:.3f}, R² {fmt_ci(law)}, ceiling b − a = "
            f"{first['law_ceiling']:.3f}",
        )
        pos, how = cov_positive(res, grpo)
        v(
            CUI,
            "the covariance term stays mostly positive",
            pos,
            len(grpo),
            COV_SHARE_THRESHOLD,
            f"share of GRPO steps with batch mean Cov > 0 with its {how} entirely above {COV_SHARE_THRESHOLD}",
            f"share of GRPO steps with batch mean Cov > 0: {fmt_ci(pos)}",
        )
        for i, (arm, name) in enumerate((("clip_cov", "Clip-Cov"), ("kl_cov", "KL-Cov"))):
            if arm in groups:
                claim = f"{name} keeps entropy higher than GRPO"
                out.append(_keep_verdict(res, CUI, claim, name, groups[arm], grpo, "GRPO", 5 + i))
    tp = res.tables.get("token_predictors_single_step")
    tp = tp if tp is not None and len(tp) else res.tables.get("token_predictors")
    if tp is not None and len(tp):
        iv, n, text = omega_vs_cov(res)
        v(
            HAO,
            "token-level Ω predicts the realized entropy change better than Cov",
            iv,
            n,
            0.0,
            f"Pearson(−Ω, ΔH) − Pearson(−Cov, ΔH) per token, Student-t 95% CI over the {n} runs (every arm and seed "
            "one value) entirely above 0",
            f"per-token Pearson with the realized ΔH, {text}; difference {fmt_ci(iv)}",
        )
    steer = next((a for a in ("steer_paper", "steer") if a in groups), None)
    base = "steer_baseline_paper" if steer == "steer_paper" else "grpo"
    if steer is not None and base in groups:
        base_name = "its vanilla baseline (same clip settings)" if steer == "steer_paper" else "GRPO"
        claim = "STEER mitigates entropy collapse"
        out.append(_keep_verdict(res, HAO, claim, "STEER", groups[steer], groups[base], base_name, 7))
    return out
