"""Figures of a true/false patching run, drawn from its saved `RunResult` only; no model is run here.

Built on `matplotlib.figure.Figure` (Agg canvas), so importing this module never changes pyplot's backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from posttrain_probe.plots import write_figures
from posttrain_probe.results import RunResult

DIRECTION_TITLES = {
    "base": "base → base",
    "post": "post → post",
    "base_to_post": "base → post (cross-model)",
    "post_to_base": "post → base (cross-model)",
}
DIRECTION_COLORS = {
    "base": "tab:blue",
    "post": "tab:orange",
    "base_to_post": "tab:green",
    "post_to_base": "tab:red",
}


def _check(result: RunResult) -> None:
    if result.analysis != "truth_patching":
        raise ValueError(f"this is a {result.analysis!r} run, not a truth_patching run; pass a `patch` run dir")


def _directions(result: RunResult, scope: str) -> list[str]:
    return [d for d in DIRECTION_TITLES if f"map.{scope}.{d}" in result.tensors]


def _class_axis(ax, result: RunResult, labels: bool = True) -> None:
    names = result.summary["position_classes"]
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names if labels else [])
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def direction_maps(result: RunResult, scope: str = "common") -> Figure:
    """Normalized patching effect (position class × layer) for every direction, on one colour scale."""
    _check(result)
    dirs = _directions(result, scope)
    maps = [result.tensors[f"map.{scope}.{d}"].numpy() for d in dirs]
    finite = np.concatenate([m[np.isfinite(m)] for m in maps]) if maps else np.zeros(1)
    top = float(np.abs(finite).max()) if finite.size else 1.0
    fig = Figure(figsize=(3.6 * len(dirs) + 1, 0.32 * maps[0].shape[0] + 1.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(dirs)))
    for i, (ax, d, m) in enumerate(zip(axes, dirs, maps)):
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-(top or 1), vmax=top or 1, interpolation="nearest")
        ax.set_title(DIRECTION_TITLES[d])
        _class_axis(ax, result, labels=i == 0)
    fig.colorbar(im, ax=list(axes), label="(LD_patched − LD_false) / mean gap")
    fig.suptitle(f"true → false patching of resid_post ({scope} pairs: {result.summary['n_pairs_used'][scope]})")
    return fig


def triptych(result: RunResult) -> Figure:
    """Base, post and base − post normalized maps on the pairs both models separate."""
    _check(result)
    b, p = (result.tensors[f"map.common.{r}"].numpy() for r in ("base", "post"))
    d = b - p
    top = np.nanmax(np.abs(np.stack([b, p]))) if np.isfinite(np.stack([b, p])).any() else 1.0
    dmax = np.nanmax(np.abs(d)) if np.isfinite(d).any() else 1.0
    fig = Figure(figsize=(12, 0.32 * b.shape[0] + 1.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for i, (ax, m, title, lim) in enumerate(zip(axes, (b, p, d), ("base", "post", "base − post"), (top, top, dmax))):
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-(lim or 1), vmax=lim or 1, interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.set_title(title)
        _class_axis(ax, result, labels=i == 0)
    c = result.summary["comparisons"].get("base_vs_post", {})
    r, dm = c.get("pearson", float("nan")), c.get("max_abs_diff", float("nan"))
    fig.suptitle(f"Pearson r = {r:.2f}, max |difference| = {dm:.2f}")
    return fig


def effect_by_layer(result: RunResult, positions: tuple[str, ...] = ("subject_last", "object", "last")) -> Figure:
    """Normalized effect by layer at a few position classes, every direction, with bootstrap intervals."""
    _check(result)
    names = result.summary["position_classes"]
    fig = Figure(figsize=(4.0 * len(positions), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(positions), sharey=True))
    for ax, pos in zip(axes, positions):
        c = names.index(pos)
        for d in _directions(result, "common"):
            m = result.tensors[f"map.common.{d}"].numpy()[c]
            lo, hi = result.tensors[f"map_ci.common.{d}"].numpy()[:, c]
            x = np.arange(len(m))
            ls = "-" if d in ("base", "post") else "--"
            ax.plot(x, m, ls=ls, marker="o", color=DIRECTION_COLORS[d], label=DIRECTION_TITLES[d])
            if np.isfinite(lo).any():
                ax.fill_between(x, lo, hi, color=DIRECTION_COLORS[d], alpha=0.15, lw=0)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(pos)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("normalized effect")
    axes[0].legend(fontsize=8)
    return fig


def figures(result: RunResult) -> dict[str, Figure]:
    """Every figure of a patching run, by file stem."""
    _check(result)
    out = {"direction_maps": direction_maps(result)}
    if {"map.common.base", "map.common.post"} <= set(result.tensors):
        out["triptych"] = triptych(result)
    out["effect_by_layer"] = effect_by_layer(result)
    return out


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 130) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)


__all__ = ["direction_maps", "effect_by_layer", "figures", "save_figures", "triptych"]
