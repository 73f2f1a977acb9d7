"""Figures of the entropy-dynamics analysis, made from a saved `rlvr_dynamics` result only."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..results import RunResult
from . import write_figures


def curves(result: RunResult) -> Figure:
    """Entropy and accuracy per step for every intervention."""
    df = result.tables["curves"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for run, sub in df.groupby("run"):
        ax1.plot(sub["step"], sub["entropy_mean"], label=run)
        ax2.plot(sub["step"], sub["accuracy"], label=run)
    ax1.set(xlabel="step", ylabel="token entropy (nats)", title="policy entropy")
    ax2.set(xlabel="step", ylabel="rollout accuracy", title="accuracy")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def entropy_law(result: RunResult) -> Figure:
    """R against H with the fitted R = −a·e^H + b per run."""
    df = result.tables["curves"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for run, sub in df.groupby("run"):
        h, r = sub["entropy_mean"].to_numpy(), sub["accuracy"].to_numpy()
        pts = ax.scatter(h, r, s=8, alpha=0.5, label=run)
        s = result.summary[run]
        hh = np.linspace(0, max(h.max(), 1e-3), 50)
        ax.plot(hh, -s["law_a"] * np.exp(hh) + s["law_b"], color=pts.get_facecolor()[0], lw=1)
    ax.set(xlabel="entropy H", ylabel="accuracy R", title="R = −a·exp(H) + b")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def predicted_vs_realized(result: RunResult) -> Figure:
    """Per step: −Cov-predicted vs realized entropy change."""
    df = result.tables["curves"]
    fig, ax = plt.subplots(figsize=(5, 4))
    if "dH_pred_cov" in df and "dH_realized" in df:
        for run, sub in df.groupby("run"):
            ax.scatter(sub["dH_pred_cov"], sub["dH_realized"], s=8, alpha=0.6, label=run)
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
    df = result.tables["quadrants"]
    runs = list(dict.fromkeys(df["run"]))
    qs = ["high_p/A+", "high_p/A-", "low_p/A+", "low_p/A-"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    w = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        sub = df[df.run == run].set_index("quadrant").reindex(qs)
        ax.bar(np.arange(4) + i * w, sub["mean_realized_dH"], width=w, label=run)
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
    return figs


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 120) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)
