"""Entropy dynamics of RLVR runs: the entropy–performance law and the covariance predictors of ΔH.

Pure functions over arrays (tested against closed forms), plus `analyze_runs`, which reads the trainer's
`metrics.jsonl` (one row per step) and optional per-token dumps and returns a `RunResult`.

- Entropy–performance law (Cui et al. 2025): R = −a·exp(H) + b fitted by least squares (linear in a, b, so the
  fit is exact and closed-form); the predicted ceiling is R at H = 0, i.e. b − a.
- Predictors of the realized entropy change: per step, the change predicted from the covariance
  (−Cov(log π, A)-style) against the measured ΔH on the same tokens; per token, Cov_i and STEER's Ω_i against the
  realized per-token ΔH.
- Like with like: with RLVRConfig.probe_first_minibatch the dumps also hold the realized entropy change of ONE
  optimizer step at the first mini-batch's positions and its exact first-order term −Cov_{a∼π}(log π, δz); table
  `token_predictors_single_step` gives the Pearson r of first_order (the ceiling), −Cov_i and −Ω_i with it.
- Primary entropy measure of a paired study: `eval_entropy_last_k`, the mean of the last k evaluations of token
  entropy on the fixed held-out set (eval.jsonl), not a training batch.
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


# ------------------------------------------------------------------------------------------ run analysis


def _read_jsonl(path) -> list[dict]:
    import json
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


EVAL_LAST_K = 2  # final evaluations averaged for the primary entropy measure of a paired study


def eval_entropy_last_k(run_dir, k: int = EVAL_LAST_K) -> float:
    """Mean `eval_entropy_mean` of the last k evaluations after step 0 in a run's eval.jsonl (the fixed
    held-out set)."""
    from pathlib import Path

    if k < 1:
        raise ValueError(f"k={k} must be >= 1 (the number of final evaluations to average)")
    rows = [r for r in _read_jsonl(Path(run_dir) / "eval.jsonl") if "eval_entropy_mean" in r and r["step"] > 0]
    if not rows:
        raise ValueError(f"{run_dir} has no evaluations after step 0; train with eval_every > 0")
    return float(np.mean([r["eval_entropy_mean"] for r in rows[-k:]]))


def eval_summary(rows: list[dict], k: int = EVAL_LAST_K) -> dict[str, float]:
    """Held-out measures of one run from its eval.jsonl rows: at step 0 (`*_first`) and averaged over the last k
    evaluations after step 0 (`*_last_k`); accuracy is the sampled one (T = 1), as training sees it. NaN where a
    run has no such evaluation."""
    rows = [r for r in rows if "eval_entropy_mean" in r]
    first = next((r for r in rows if r["step"] == 0), None)
    last = [r for r in rows if r["step"] > 0][-k:]
    nan = float("nan")

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in last])) if last else nan

    h0 = first["eval_entropy_mean"] if first else nan
    h1 = mean("eval_entropy_mean")
    return {
        "eval_k": len(last),
        "eval_last_steps": [int(r["step"]) for r in last],
        "eval_entropy_first": float(h0),
        "eval_entropy_last_k": h1,
        "eval_entropy_drop_frac": float(1 - h1 / h0) if h0 > 0 else nan,
        "eval_accuracy_first": float(first["eval_accuracy_sampled"]) if first else nan,
        "eval_accuracy_last_k": mean("eval_accuracy_sampled"),
        "eval_accuracy_greedy_first": float(first["eval_accuracy_greedy"]) if first else nan,
        "eval_accuracy_greedy_last_k": mean("eval_accuracy_greedy"),
    }


def _token_rows(run) -> dict[str, np.ndarray]:
    """Concatenate every per-token dump of a run (an `RLVRRun`) into flat arrays over valid response tokens."""
    from safetensors.numpy import load_file

    cols: dict[str, list[np.ndarray]] = {}
    for _, f in run.token_dumps():
        d = load_file(str(f))
        mask = d["response_mask"].astype(bool)
        group_acc = None
        if "prompt_index" in d and "reward" in d:
            pidx = d["prompt_index"].reshape(-1)
            rew = d["reward"].reshape(-1).astype(float)
            means = {int(k): rew[pidx == k].mean() for k in np.unique(pidx)}
            group_acc = np.array([means[int(k)] for k in pidx])[:, None].repeat(mask.shape[1], axis=1)
        for key in ("advantage", "entropy_old", "entropy_new", "logp_old", "logp_new", "cov", "omega"):
            if key in d:
                cols.setdefault(key, []).append(d[key].astype(float)[mask])
        if "first_minibatch" in d:  # single-step probe (only where every dump has it)
            cols.setdefault("first_minibatch", []).append(d["first_minibatch"].astype(bool)[mask])
            for key in ("dH1_realized", "dH1_first_order"):
                cols.setdefault(key, []).append(d[key].astype(float)[mask])
        if group_acc is not None:
            cols.setdefault("group_accuracy", []).append(group_acc[mask])
    return {k: np.concatenate(v) for k, v in cols.items()}


def analyze_runs(run_dirs, fit_fractions=(0.15, 0.3), smooth_window: int = 5, eval_last_k: int = EVAL_LAST_K):
    """Entropy dynamics of one or more RLVR run directories → a `RunResult` ('rlvr_dynamics'). Runs labelled
    '<arm>_seed<k>' (a paired study) also get table `paired` (each arm against its baseline over seeds) and, when
    doses were swept, `dose_response`."""
    import pandas as pd

    from ..results import RunResult, provenance
    from ..rlvr.run import RLVRRun
    from .paired import dose_table, paired_effects

    if not run_dirs:
        raise ValueError("no RLVR run directories given; pass the folders written by `posttrain-probe rlvr train`")
    curves, laws, steps_agree, token_agree, quads, difficulty = [], [], [], [], [], []
    single_step, eval_curves = [], []
    summary: dict = {}
    models, data = {}, {}
    for rd in run_dirs:
        run = RLVRRun(rd)
        rows = run.metrics()
        if len(rows) < 3:
            raise ValueError(f"{rd} has {len(rows)} metric rows; train at least 3 steps before analysing it")
        label = run.label
        if label in summary:
            raise ValueError(f"two runs are labelled {label!r} ({rd}); give each run its own arm or seed")
        models[label] = run.start_model()
        ev_rows = run.eval_rows()
        for r in ev_rows:
            if "eval_entropy_mean" in r:
                eval_curves.append(
                    {
                        "run": label,
                        "step": int(r["step"]),
                        "eval_entropy_mean": float(r["eval_entropy_mean"]),
                        "eval_accuracy_sampled": float(r["eval_accuracy_sampled"]),
                        "eval_accuracy_greedy": float(r["eval_accuracy_greedy"]),
                    }
                )
        data[label] = {k: run.config.get(k) for k in ("task", "data", "eval_data")}
        df = pd.DataFrame(rows)
        df["run"] = label
        keep = [
            c
            for c in (
                "run",
                "step",
                "reward_mean",
                "accuracy",
                "entropy_mean",
                "dH_realized",
                "dH_pred_cov",
                "dH_pred_omega",
                "cov_mean",
                "clip_frac",
                "touched_frac",
                "dH1_realized",
                "dH1_first_order",
                "cov_selected_frac",
                "cov_selected_first_mb_share",
                "steer_lambda_mean",
                "adv_mass_removed",
            )
            if c in df
        ]
        curves.append(df[keep])
        h, r = df["entropy_mean"].to_numpy(float), df["accuracy"].to_numpy(float)
        law = fit_entropy_law(h, r)
        laws.append({"run": label, **law.as_dict()})
        for frac in fit_fractions:
            if len(h) * (1 - frac) >= 1 and int(round(frac * len(h))) >= 3:
                laws.append({"run": label, **extrapolation_error(h, r, frac)})
        for pred in ("dH_pred_cov", "dH_pred_omega"):
            if pred in df and "dH_realized" in df:
                for w in (1, smooth_window):
                    steps_agree.append(
                        {
                            "run": label,
                            "predictor": pred,
                            "smooth_window": w,
                            **predictor_agreement(smooth(df[pred], w), smooth(df["dH_realized"], w)),
                        }
                    )
        tok = _token_rows(run)
        if tok and "entropy_new" in tok:
            realized = tok["entropy_new"] - tok["entropy_old"]
            for name in ("cov", "omega"):
                if name in tok:
                    token_agree.append(
                        {"run": label, "predictor": f"-{name}", **predictor_agreement(-tok[name], realized)}
                    )
            if "first_minibatch" in tok and len(tok["first_minibatch"]) == len(realized):
                first = tok["first_minibatch"]
                y1 = tok["dH1_realized"][first]
                for name, pred in (
                    ("first_order", tok["dH1_first_order"][first]),
                    ("-cov", -tok["cov"][first]),
                    ("-omega", -tok["omega"][first]),
                ):
                    single_step.append({"run": label, "predictor": name, **predictor_agreement(pred, y1)})
            for q in quadrant_table(np.exp(tok["logp_old"]), tok["entropy_old"], tok["advantage"], realized):
                quads.append({"run": label, **q})
            if "group_accuracy" in tok and "cov" in tok:
                bins = pd.cut(
                    tok["group_accuracy"],
                    [-0.01, 0.25, 0.5, 0.75, 1.0],
                    labels=["0-25%", "25-50%", "50-75%", "75-100%"],
                )
                for b, sub in pd.DataFrame({"bin": bins, "cov": tok["cov"]}).groupby("bin", observed=True):
                    difficulty.append(
                        {
                            "run": label,
                            "group_accuracy": str(b),
                            "mean_cov": float(sub["cov"].mean()),
                            "n_tokens": int(len(sub)),
                        }
                    )
        summary[label] = {
            "steps": int(len(df)),
            "accuracy_first": float(r[0]),
            "accuracy_last": float(r[-1]),
            "entropy_first": float(h[0]),
            "entropy_last": float(h[-1]),
            "entropy_drop_frac": float(1 - h[-1] / h[0]) if h[0] > 0 else float("nan"),
            "law_a": law.a,
            "law_b": law.b,
            "law_r2": law.r2,
            "law_ceiling": law.ceiling,
            "share_steps_cov_positive": float((df["cov_mean"] > 0).mean()) if "cov_mean" in df else float("nan"),
            **eval_summary(ev_rows, eval_last_k),
            "seed": int(run.config.get("seed", 0)),
            "lr": float(run.config.get("lr", float("nan"))),
            "loss": run.config.get("loss"),
        }
    tables = {
        "curves": pd.concat(curves, ignore_index=True),
        "entropy_law": pd.DataFrame(laws),
        "step_predictors": pd.DataFrame(steps_agree),
    }
    if token_agree:
        tables["token_predictors"] = pd.DataFrame(token_agree)
    if single_step:
        tables["token_predictors_single_step"] = pd.DataFrame(single_step)
    if quads:
        tables["quadrants"] = pd.DataFrame(quads)
    if difficulty:
        tables["cov_by_difficulty"] = pd.DataFrame(difficulty)
    if eval_curves:
        tables["eval_curves"] = pd.DataFrame(eval_curves)
    effects = paired_effects(summary)
    if len(effects):
        tables["paired"] = effects
        doses = dose_table(summary, effects)
        if len(doses):
            tables["dose_response"] = doses
    return RunResult(
        analysis="rlvr_dynamics",
        config={
            "run_dirs": [str(r) for r in run_dirs],
            "fit_fractions": list(fit_fractions),
            "smooth_window": smooth_window,
            "eval_last_k": eval_last_k,
        },
        summary=summary,
        tables=tables,
        provenance=provenance(models=models, data=data),
    )
