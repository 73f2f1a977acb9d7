"""Figures of an entropy-neuron run, drawn from its saved `RunResult` only (`read_run(dir)`); no model is run.

Figures are built with `matplotlib.figure.Figure` (Agg canvas), so importing this module never changes the
global pyplot backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from posttrain_probe.plots import write_figures
from posttrain_probe.results import RunResult

ROLES = ("base", "post")
RULE_STYLE = {
    "du": ("tab:red", "o", "Du rule (top norm, low LogitVar)"),
    "null": ("tab:orange", "x", "top ρ"),
}
COPY_COLORS = {"total": "tab:blue", "direct": "tab:cyan"}


def _check(result: RunResult) -> None:
    if result.analysis != "neurons":
        raise ValueError(f"this is a {result.analysis!r} run, not a neurons run; pass a `neurons` run dir")


def screen_scatter(result: RunResult) -> Figure:
    """‖w_out‖ against LogitVar (log-log) for every neuron of the ablation layer, coloured by the null-space
    fraction ρ, with both selections marked; one panel per model."""
    _check(result)
    screen, layer = result.tables["screen"], result.summary["layer"]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    sc = None
    for ax, role in zip(axes, ROLES):
        s = screen[(screen.role == role) & (screen.layer == layer)]
        sc = ax.scatter(s.norm, s.logit_var, c=s.null_frac, s=8, cmap="viridis", vmin=0, vmax=1, alpha=0.8)
        for rule, (color, marker, label) in RULE_STYLE.items():
            sel = s[s[f"rank_{rule}"] >= 0]
            kw = {"facecolors": "none", "edgecolors": color} if marker == "o" else {"c": color}
            ax.scatter(sel.norm, sel.logit_var, marker=marker, s=60, linewidths=1.4, label=label, **kw)
        ax.set(xscale="log", yscale="log", xlabel="‖w_out‖", title=f"{role}, layer {layer}")
    axes[0].set_ylabel("LogitVar")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.colorbar(sc, ax=axes, shrink=0.8, label="null-space fraction ρ")
    fig.suptitle(f"Entropy-neuron screens (null space k = {result.summary['null_k']})")
    return fig


def set_effects(result: RunResult) -> Figure:
    """Change of entropy and loss when mean-ablating each selected set, total and direct, next to the
    random norm-matched control sets (mean ± std; dots: single control sets)."""
    _check(result)
    eff = result.tables["effects"]
    sets = eff[eff.kind == "set"]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    groups = [(role, rule) for role in ROLES for rule in RULE_STYLE]
    x = np.arange(len(groups))
    w = 0.2
    for ax, metric, label in zip(axes, ("dH", "dL"), ("Δ entropy (nats)", "Δ loss (nats)")):
        for k, copy in enumerate(("total", "direct")):
            col = f"{metric}_{copy}"
            main, ctrl_mu, ctrl_sd, ctrl_pts = [], [], [], []
            for role, rule in groups:
                s = sets[sets.role == role]
                main.append(float(s.loc[s.condition == f"{rule}_set", col].iloc[0]))
                c = s.loc[s.condition.str.startswith(f"{rule}_set_control_"), col].to_numpy()
                ctrl_pts.append(c)
                ctrl_mu.append(c.mean() if len(c) else np.nan)
                ctrl_sd.append(c.std(ddof=1) if len(c) > 1 else 0.0)
            off = (2 * k - 1.5) * w
            ax.bar(x + off, main, w, color=COPY_COLORS[copy], label=f"selected, {copy}")
            ax.bar(x + off + w, ctrl_mu, w, yerr=ctrl_sd, color="lightgray", edgecolor=COPY_COLORS[copy])
            for i, pts in enumerate(ctrl_pts):
                ax.plot(np.full(len(pts), x[i] + off + w), pts, ".", color="gray", ms=3)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, [f"{role}\n{rule} set" for role, rule in groups], fontsize=8)
        ax.set(ylabel=label)
    handles, _ = axes[0].get_legend_handles_labels()
    handles.append(Patch(facecolor="lightgray", edgecolor="k", label="control sets (mean ± std, dots)"))
    axes[0].legend(handles=handles, fontsize=7)
    fig.suptitle("Mean ablation of the selected sets (total vs direct, final-norm scale frozen)")
    return fig


def single_effects(result: RunResult) -> Figure:
    """Every singly ablated neuron: total against direct change of entropy (selected neurons coloured,
    norm-matched controls grey, other neurons light); off the diagonal = mediated by the final norm."""
    _check(result)
    eff = result.tables["effects"]
    singles = eff[eff.kind == "single"]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, role in zip(axes, ROLES):
        s = singles[singles.role == role]
        for group, color, size, label in (
            ("rest", "#cccccc", 6, "other neurons"),
            ("control", "gray", 14, "norm-matched controls"),
            ("other_model", "tab:green", 22, "selected only in the other model"),
            ("null", RULE_STYLE["null"][0], 30, "top ρ"),
            ("du", RULE_STYLE["du"][0], 30, "Du rule"),
            ("du+null", "tab:purple", 36, "both rules"),
        ):
            g = s[s.group == group]
            if len(g):
                ax.scatter(g.dH_direct, g.dH_total, s=size, color=color, label=label, alpha=0.9)
        lim = float(np.nanmax(np.abs(s[["dH_total", "dH_direct"]].to_numpy()))) if len(s) else 1.0
        lim = lim * 1.1 if lim > 0 else 1.0
        ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.6, ls=":")
        ax.axhline(0, color="gray", lw=0.4)
        ax.axvline(0, color="gray", lw=0.4)
        ax.set(xlabel="direct Δ entropy (norm scale frozen)", ylabel="total Δ entropy", title=role)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Single-neuron mean ablations, layer {result.summary['layer']}")
    return fig


def explained_share(result: RunResult) -> Figure:
    """Share of the base→post entropy gap closed by ablating a selected set in both models (each model its
    own set, or base's / post's set in both), total and direct, against random control sets."""
    _check(result)
    share = result.tables["explained_share"]
    groups = list(dict.fromkeys(zip(share.rule, share.source)))
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(groups))
    w = 0.26
    for k, copy in enumerate(("total", "direct")):
        t = share[share.effect == copy].set_index(["rule", "source"]).loc[groups]
        ax.bar(x + (k - 1) * w, t.share_both, w, color=COPY_COLORS[copy], label=f"selected set, {copy}")
    ctrl = share[(share.effect == "total") & (share.source == "own")].set_index("rule")
    own = [i for i, (_, src) in enumerate(groups) if src == "own"]
    ax.bar(
        x[own] + w,
        [ctrl.control_share_both_mean[groups[i][0]] for i in own],
        w,
        yerr=[np.nan_to_num(ctrl.control_share_both_std[groups[i][0]]) for i in own],
        color="lightgray",
        label="control sets, total (mean ± std)",
    )
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, [f"{rule} rule\n{src} set" for rule, src in groups], fontsize=8)
    gap = result.summary["entropy_gap_post_minus_base"]
    ax.set(ylabel="share of H_post − H_base", title=f"Explained share of the entropy gap ({gap:+.4f} nats)")
    ax.legend(fontsize=7)
    return fig


def figures(result: RunResult) -> dict[str, Figure]:
    """Every figure of a neurons run, by file stem."""
    _check(result)
    return {
        "neurons_screen": screen_scatter(result),
        "neurons_set_effects": set_effects(result),
        "neurons_single_effects": single_effects(result),
        "neurons_explained_share": explained_share(result),
    }


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 130) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)


__all__ = ["explained_share", "figures", "save_figures", "screen_scatter", "set_effects", "single_effects"]
