"""Figures of a refusal run, drawn from its saved `RunResult` only (`read_run(dir)`); no model is run here.

Figures are built with `matplotlib.figure.Figure` (Agg canvas), so importing this module never changes the
global pyplot backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from posttrain_probe.plots import write_figures
from posttrain_probe.results import RunResult

ROLES = ("base", "post")
SOURCE_COLORS = {"none": "black", "base": "tab:blue", "post": "tab:orange", "random": "tab:gray"}
SCORES = {
    "bypass_score": "bypass (harmful, ablated) ↓",
    "induce_score": "induce (harmless, added) ↑",
    "kl": "KL",
}


def _check(result: RunResult) -> None:
    if result.analysis != "refusal":
        raise ValueError(f"this is a {result.analysis!r} run, not a refusal run; pass a `refusal` run dir")


def candidate_scores(result: RunResult) -> Figure:
    """Bypass, induce and KL scores of every candidate (layer × post-instruction position) per model; the
    selected candidate is boxed, candidates failing a filter are hatched."""
    _check(result)
    t = result.tables["candidates"]
    fig = Figure(figsize=(11, 5.5), layout="constrained")
    axes = fig.subplots(2, 3, squeeze=False)
    for i, role in enumerate(ROLES):
        c = t[t.model == role]
        layers = sorted(c.layer.unique())
        positions = sorted(c.position.unique())
        tokens = [c[c.position == p].position_token.iloc[0] for p in positions]
        for j, (col, title) in enumerate(SCORES.items()):
            grid = np.full((len(layers), len(positions)), np.nan)
            for r in c.itertuples():
                grid[layers.index(r.layer), positions.index(r.position)] = getattr(r, col)
            ax = axes[i, j]
            im = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis" if col != "kl" else "magma")
            fig.colorbar(im, ax=ax, shrink=0.8)
            for r in c.itertuples():
                y, x = layers.index(r.layer), positions.index(r.position)
                if not r.passes_all:
                    ax.add_patch(_rect(x, y, hatch="//", ec="white", lw=0))
                if r.selected:
                    ax.add_patch(_rect(x, y, hatch=None, ec="red", lw=2))
            ax.set_xticks(range(len(positions)), [f"{p}\n{tok!r}" for p, tok in zip(positions, tokens)], fontsize=7)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(title=f"{role}: {title}", xlabel="position", ylabel="layer" if j == 0 else None)
    fig.suptitle("Refusal-direction candidates on the validation split (red box: selected; hatched: filtered)")
    return fig


def _rect(x: float, y: float, hatch, ec, lw):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch=hatch, ec=ec, lw=lw)


def refusal_rates(result: RunResult, metric: str = "refusal_rate") -> Figure:
    """Refusal rate (or mean refusal score) per applied-to model, prompt set and condition, with bars per
    direction source (base → post is forward transfer, post → base backward)."""
    _check(result)
    if metric not in ("refusal_rate", "refusal_score"):
        raise ValueError(f"metric must be refusal_rate or refusal_score, got {metric!r}")
    ev = result.tables["evaluation"]
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True, squeeze=False)[0]
    groups = [(s, c) for s in ("harmful", "harmless") for c in ("baseline", "ablation", "addition")]
    sources = [s for s in ("none", "base", "post", "random") if s in set(ev.direction_from)]
    width = 0.8 / max(len(sources) - 1, 1)
    for ax, to in zip(axes, ROLES):
        e = ev[ev.applied_to == to]
        ax.set_title(f"applied to {to}")
        why = _empty_panel_reason(e[metric], to, metric)
        if why:  # nothing to see: say why instead of an empty or all-zero panel
            ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=9, transform=ax.transAxes)
            ax.set_xticks([])
            continue
        for gi, (pset, cond) in enumerate(groups):
            srcs = ["none"] if cond == "baseline" else [s for s in sources if s != "none"]
            for si, src in enumerate(srcs):
                row = e[(e.prompt_set == pset) & (e.condition == cond) & (e.direction_from == src)]
                if row.empty:
                    continue
                x = gi + (si - (len(srcs) - 1) / 2) * width
                ax.bar(
                    x,
                    row[metric].iloc[0],
                    width * 0.95,
                    color=SOURCE_COLORS[src],
                    label=src if gi < 2 else None,
                )
        ax.set_xticks(range(len(groups)), [f"{p}\n{c}" for p, c in groups], fontsize=8)
        if metric == "refusal_rate":
            ax.set_ylim(0, 1.05)
        else:
            ax.axhline(0, color="gray", lw=0.6)
    axes[0].set_ylabel("refusal rate (prefix match)" if metric == "refusal_rate" else "refusal score (log-odds)")
    uniq = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        uniq.update({k: h for k, h in zip(labels, handles) if k not in uniq})
    names = [f"direction from {k}" if k != "none" else "no intervention" for k in uniq]
    fig.legend(uniq.values(), names, loc="outside right upper", fontsize=8)  # beside the panels, not over bars
    fig.suptitle(f"{'Refusal rate' if metric == 'refusal_rate' else 'Refusal score'} on the evaluation split")
    return fig


def _empty_panel_reason(values, role: str, metric: str) -> str:
    """Why the panel of `role` would show nothing ("" when it shows something)."""
    finite = values[np.isfinite(values.to_numpy(dtype=float))]
    if finite.empty:
        return f"no {metric.replace('_', ' ')} was measured on {role}"
    if metric == "refusal_rate" and (finite == 0).all():
        return (
            f"{role} refuses none of the evaluation\nprompts under any condition: every\nrate is 0 (the "
            "refusal-score figure\nshows how far each condition moves it)"
        )
    return ""


def direction_cosines(result: RunResult) -> Figure:
    """Cosine between the base and the post candidate at every layer (last position, and the selected
    positions), and each model's candidates against its own selected direction."""
    _check(result)
    c = result.tables["cosines"]
    fig = Figure(figsize=(6.5, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(c.layer, c.cos_last_position, "o-", color="k", label="base·post, last position")
    ax.plot(c.layer, c.cos_selected_positions, "s--", color="tab:purple", label="base·post, selected positions")
    ax.plot(c.layer, c.cos_base_to_selected_base, ":", color="tab:blue", label="base vs its selected")
    ax.plot(c.layer, c.cos_post_to_selected_post, ":", color="tab:orange", label="post vs its selected")
    for role, color in (("base", "tab:blue"), ("post", "tab:orange")):
        ax.axvline(result.summary["selected"][role]["layer"], color=color, lw=0.8, alpha=0.6)
    ax.axhline(0, color="gray", lw=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(
        xlabel="layer (resid_pre)",
        ylabel="cosine",
        ylim=(-1.05, 1.05),
        title="Refusal directions: base vs post",
    )
    ax.legend(fontsize=7)
    return fig


def figures(result: RunResult) -> dict[str, Figure]:
    return {
        "refusal_candidates": candidate_scores(result),
        "refusal_rates": refusal_rates(result),
        "refusal_scores": refusal_rates(result, "refusal_score"),
        "refusal_cosines": direction_cosines(result),
    }


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 130) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)


__all__ = ["candidate_scores", "direction_cosines", "figures", "refusal_rates", "save_figures"]
