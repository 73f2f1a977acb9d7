"""Figures of the entropy-dynamics analysis, made from a saved `rlvr_dynamics` result only.

Runs of a paired study ('<arm>_seed<k>') are drawn per arm: the mean over seeds with a band from the lowest to
the highest seed, one colour per arm. Dose arms ('METHOD@PARAM=VALUE') have their own dose–response figures; the
curves and paired-effects figures leave them out when the study has named arms too.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..results import RunResult
from ..rlvr.paired import parse_label
from . import write_figures


def _colors(arms: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(arms) <= 10 else "tab20")
    return {a: cmap(i % cmap.N) for i, a in enumerate(arms)}


def _with_arm(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["arm"] = [parse_label(r)[0] for r in df["run"]]
    return df


def _without_doses(df: pd.DataFrame) -> pd.DataFrame:
    """`df` without its dose arms' rows, unless every arm is a dose arm."""
    dose = df["arm"].astype(str).str.contains("@", regex=False)
    return df[~dose] if (~dose).any() else df


def _band(ax, df: pd.DataFrame, y: str, colors: dict[str, tuple], smooth: int = 1) -> None:
    """Mean over a arm's seeds per step, and a band from the lowest to the highest seed."""
    for arm, sub in df.groupby("arm", sort=False):
        wide = sub.pivot_table(index="step", columns="run", values=y)
        if smooth > 1:
            wide = wide.rolling(smooth, min_periods=1).mean()
        n = wide.shape[1]
        ax.plot(wide.index, wide.mean(axis=1), color=colors[arm], lw=1.2, label=arm if n == 1 else f"{arm} (n={n})")
        if n > 1:
            ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=colors[arm], alpha=0.15, lw=0)


def curves(result: RunResult) -> Figure:
    """Entropy and accuracy per step for every arm but the dose arms (training batches, smoothed over 5 steps), and
    the held-out evaluation entropy and accuracy where the runs evaluated (the primary measure of a paired study)."""
    df = _without_doses(_with_arm(result.tables["curves"]))
    ev = result.tables.get("eval_curves")
    arms = list(dict.fromkeys(df["arm"]))
    colors = _colors(arms)
    panels = 4 if ev is not None and len(ev) else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.6))
    _band(axes[0], df, "entropy_mean", colors, smooth=5)
    _band(axes[1], df, "accuracy", colors, smooth=5)
    axes[0].set(xlabel="step", ylabel="token entropy (nats)", title="entropy (training batch)")
    axes[1].set(xlabel="step", ylabel="rollout accuracy", title="accuracy (training batch)")
    if panels == 4:
        ev = _without_doses(_with_arm(ev))
        _band(axes[2], ev, "eval_entropy_mean", colors)
        _band(axes[3], ev, "eval_accuracy_sampled", colors)
        axes[2].set(xlabel="step", ylabel="token entropy (nats)", title="entropy (held-out eval)")
        axes[3].set(xlabel="step", ylabel="accuracy (T = 1)", title="accuracy (held-out eval)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 6), 1, 1))
    return fig


def paired(result: RunResult) -> Figure | None:
    """Each arm (but the dose arms) against its baseline over paired seeds: final entropy ratio and accuracy
    difference, mean with 95% CI; the null arm's interval (chaos alone) shaded."""
    t = result.tables.get("paired")
    if t is None or not len(t):
        return None
    t = _without_doses(t).iloc[::-1].reset_index(drop=True)
    y = np.arange(len(t))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.6 + 0.38 * len(t)), sharey=True)
    cols = ((a1, "entropy_ratio", "ratio_lo", "ratio_hi", 1.0), (a2, "acc_diff", "acc_lo", "acc_hi", 0.0))
    for ax, m, lo, hi, ref in cols:
        err = np.array([t[m] - t[lo], t[hi] - t[m]])
        ax.errorbar(t[m], y, xerr=np.nan_to_num(err, nan=0.0), fmt="o", color="k", ms=4, capsize=3)
        ax.axvline(ref, color="grey", lw=0.8)
        null = t[t.arm == "null"]
        if len(null) and math.isfinite(float(null[lo].iloc[0])):
            ax.axvspan(float(null[lo].iloc[0]), float(null[hi].iloc[0]), color="tab:orange", alpha=0.15, lw=0)
    a1.set_yticks(y, [f"{a} / {b}" for a, b in zip(t.arm, t.baseline)], fontsize=8)
    what = "held-out eval" if (t.measure == "eval").all() else "last training step"
    n = int(t.n_seeds.max())
    a1.set(xlabel=f"final entropy ratio ({what})", title=f"entropy vs baseline (95% CI, {n} seeds)")
    a2.set(xlabel="accuracy difference", title="accuracy vs baseline (shaded: null arm)")
    fig.tight_layout()
    return fig


def dose_response(result: RunResult) -> dict[str, Figure]:
    """One figure per method swept: final entropy ratio and accuracy difference against the dose, with 95% CIs."""
    t = result.tables.get("dose_response")
    if t is None or not len(t):
        return {}
    figs = {}
    for method, sub in t.groupby("method", sort=True):
        params = list(dict.fromkeys(sub.dose_param))
        fig, axes = plt.subplots(len(params), 2, figsize=(9, 3.2 * len(params)), squeeze=False)
        for row, param in zip(axes, params):
            d = sub[sub.dose_param == param].sort_values("dose_value")
            for ax, m, lo, hi, ref, lab in (
                (row[0], "entropy_ratio", "ratio_lo", "ratio_hi", 1.0, "final entropy / baseline"),
                (row[1], "acc_diff", "acc_lo", "acc_hi", 0.0, "accuracy − baseline"),
            ):
                err = np.nan_to_num(np.array([d[m] - d[lo], d[hi] - d[m]]), nan=0.0)
                ax.errorbar(d.dose_value, d[m], yerr=err, fmt="o-", capsize=3)
                ax.axhline(ref, color="grey", lw=0.8)
                ax.set(xscale="log", xlabel=param, ylabel=lab)
                ax.set_xticks(list(d.dose_value), [f"{v:g}" for v in d.dose_value])
                ax.minorticks_off()
            lo_n, hi_n = int(d.n_seeds.min()), int(d.n_seeds.max())
            seeds = f"{lo_n}" if lo_n == hi_n else f"{lo_n}–{hi_n}"
            row[0].set_title(f"{method}: entropy (95% CI over {seeds} seeds)")
            row[1].set_title(f"{method}: accuracy")
        fig.tight_layout()
        figs[f"dose_{method}"] = fig
    return figs


def entropy_law(result: RunResult) -> Figure:
    """R against H with the fitted R = −a·e^H + b per run (points and fits coloured by arm)."""
    df = _with_arm(result.tables["curves"])
    colors = _colors(list(dict.fromkeys(df["arm"])))
    fig, ax = plt.subplots(figsize=(5, 4))
    for run, sub in df.groupby("run", sort=False):
        arm = sub["arm"].iloc[0]
        first = run == df[df.arm == arm]["run"].iloc[0]
        h, r = sub["entropy_mean"].to_numpy(), sub["accuracy"].to_numpy()
        ax.scatter(h, r, s=6, alpha=0.35, color=colors[arm], label=arm if first else None)
        s = result.summary[run]
        hh = np.linspace(0, max(h.max(), 1e-3), 50)
        ax.plot(hh, -s["law_a"] * np.exp(hh) + s["law_b"], color=colors[arm], lw=0.8)
    ax.set(xlabel="entropy H", ylabel="accuracy R", title="R = −a·exp(H) + b")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def predicted_vs_realized(result: RunResult) -> Figure:
    """Per step: −Cov-predicted vs realized entropy change."""
    df = _with_arm(result.tables["curves"])
    colors = _colors(list(dict.fromkeys(df["arm"])))
    fig, ax = plt.subplots(figsize=(5, 4))
    if "dH_pred_cov" in df and "dH_realized" in df:
        for arm, sub in df.groupby("arm", sort=False):
            ax.scatter(sub["dH_pred_cov"], sub["dH_realized"], s=6, alpha=0.5, color=colors[arm], label=arm)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set(xlabel="predicted ΔH (−mean Cov)", ylabel="realized ΔH", title="entropy change per step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def quadrants(result: RunResult) -> Figure | None:
    """Mean realized ΔH per (p vs e^−H) × sign(A) quadrant."""
    if "quadrants" not in result.tables:
        return None
    df = _with_arm(result.tables["quadrants"])
    arms = list(dict.fromkeys(df["arm"]))
    colors = _colors(arms)
    qs = ["high_p/A+", "high_p/A-", "low_p/A+", "low_p/A-"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    w = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):  # token-weighted over the arm's seeds
        sub = df[df.arm == arm].groupby("quadrant")[["sum_realized_dH", "n_tokens"]].sum().reindex(qs)
        mean = sub["sum_realized_dH"] / sub["n_tokens"].where(sub["n_tokens"] > 0)
        ax.bar(np.arange(4) + i * w, mean, width=w, color=colors[arm], label=arm)
    ax.set_xticks(np.arange(4) + 0.4 - w / 2, qs)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(ylabel="mean realized ΔH per token", title="theory: high_p/A+ and low_p/A− lower entropy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(result: RunResult) -> dict[str, Figure]:
    if result.analysis != "rlvr_dynamics":
        raise ValueError(f"this is a {result.analysis!r} result, not rlvr_dynamics")
    figs = {
        "curves": curves(result),
        "entropy_law": entropy_law(result),
        "predicted_vs_realized": predicted_vs_realized(result),
    }
    q = quadrants(result)
    if q is not None:
        figs["quadrants"] = q
    p = paired(result)
    if p is not None:
        figs["paired"] = p
    figs.update(dose_response(result))
    return figs


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 120) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)
