"""Verdicts of the RLVR entropy-dynamics analysis (Cui et al. 2025, Hao et al. 2025), from a saved result only."""

from __future__ import annotations

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Verdict


def _v(paper: str, claim: str, verdict: str, evidence: str, **numbers) -> Verdict:
    return Verdict(paper, claim, verdict, evidence, section="dynamics", **numbers)


def dynamics_verdicts(res: RunResult) -> list[Verdict]:
    s = res.summary
    out = []
    g = s.get("grpo")
    if g and g["accuracy_first"] == 0 and g["accuracy_last"] == 0:
        return [
            _v(
                "Cui et al. 2025 / Hao et al. 2025",
                "entropy dynamics claims",
                "inconclusive",
                f"GRPO never earned a reward in {g['steps']} steps (accuracy 0): no learning signal to study",
            )
        ]
    if g:
        collapsed = g["entropy_drop_frac"] > 0.3 and g["accuracy_last"] > g["accuracy_first"]
        out.append(
            _v(
                "Cui et al. 2025",
                "without intervention, entropy collapses while performance rises",
                "reproduced" if collapsed else "not reproduced",
                f"GRPO: entropy {g['entropy_first']:.3f} → {g['entropy_last']:.3f} ({g['entropy_drop_frac']:.0%} "
                f"drop), accuracy {g['accuracy_first']:.3f} → {g['accuracy_last']:.3f} over {g['steps']} steps",
            )
        )
        r2 = g["law_r2"]
        out.append(
            _v(
                "Cui et al. 2025",
                "R = −a·exp(H) + b fits performance against entropy",
                "reproduced" if r2 > 0.8 else "not reproduced" if r2 < 0.4 else "mixed",
                f"GRPO fit a = {g['law_a']:.3f}, b = {g['law_b']:.3f}, R² = {r2:.2f}, ceiling b − a = "
                f"{g['law_ceiling']:.3f} (reproduced: R² > 0.8)",
            )
        )
        pos = g["share_steps_cov_positive"]
        out.append(
            _v(
                "Cui et al. 2025",
                "the covariance term stays mostly positive",
                "reproduced" if pos > 0.8 else "not reproduced" if pos < 0.5 else "mixed",
                f"share of GRPO steps with batch mean Cov > 0: {pos:.2f}",
            )
        )
        cov_runs = {k: v for k, v in s.items() if k in ("clip_cov", "kl_cov")}
        if cov_runs:
            kept = {k: v["entropy_last"] / max(g["entropy_last"], 1e-9) for k, v in cov_runs.items()}
            ok = all(x > 1.2 for x in kept.values())
            out.append(
                _v(
                    "Cui et al. 2025",
                    "Clip-Cov and KL-Cov keep entropy higher than GRPO",
                    "reproduced" if ok else "not reproduced" if all(x < 1.05 for x in kept.values()) else "mixed",
                    ", ".join(f"{k}: final entropy {v:.2f}× GRPO's" for k, v in kept.items())
                    + " (reproduced: > 1.2× for both; same prompts and sampling seeds per step)",
                )
            )
    tp = res.tables.get("token_predictors")
    if tp is not None and len(tp):
        rows = {(r.run, r.predictor): r.pearson for r in tp.itertuples()}
        better = [run for run in {r for r, _ in rows} if rows.get((run, "-omega"), -1) > rows.get((run, "-cov"), 1)]
        n = len({r for r, _ in rows})
        out.append(
            _v(
                "Hao et al. 2025 (STEER)",
                "token-level Ω predicts the realized entropy change better than Cov",
                "reproduced" if len(better) == n else "not reproduced" if not better else "mixed",
                "per-token Pearson with realized ΔH: "
                + ", ".join(
                    f"{run}: Ω {rows.get((run, '-omega'), float('nan')):.2f} "
                    f"vs Cov {rows.get((run, '-cov'), float('nan')):.2f}"
                    for run in sorted({r for r, _ in rows})
                ),
            )
        )
        st = s.get("steer")
        if st and g:
            out.append(
                _v(
                    "Hao et al. 2025 (STEER)",
                    "STEER mitigates entropy collapse",
                    "reproduced" if st["entropy_last"] > 1.2 * g["entropy_last"] else "not reproduced",
                    f"final entropy STEER {st['entropy_last']:.3f} vs GRPO {g['entropy_last']:.3f}; accuracy "
                    f"{st['accuracy_last']:.3f} vs {g['accuracy_last']:.3f}",
                )
            )
    return out
