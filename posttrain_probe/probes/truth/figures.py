"""Figures of a truth run, drawn from its saved `RunResult` only (`read_run(dir)`); no model is run here.

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

ROLE_COLORS = {"base": "tab:blue", "post": "tab:orange", "random": "tab:gray"}
PROBE_TITLES = {"mass_mean": "mass-mean probe", "logistic": "logistic probe"}


def _check(result: RunResult) -> None:
    if result.analysis != "truth":
        raise ValueError(f"this is a {result.analysis!r} run, not a truth run; pass a `truth` run dir")


def _mark_probe_layer(ax, result: RunResult) -> None:
    lp = result.summary.get("probe_layer")
    if lp is not None:
        ax.axvline(lp, color="k", lw=0.8, ls=":", label=f"probe layer {lp}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def accuracy_by_layer(result: RunResult) -> Figure:
    """Held-out (solid) and train (dashed) accuracy per layer for both models and probes; dotted: each
    model's probe scored on the other model's activations."""
    _check(result)
    la, cm = result.tables["layer_accuracy"], result.tables["cross_model"]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind in zip(axes, PROBE_TITLES):
        for role in ("base", "post"):
            t = la[(la.model == role) & (la.probe == kind)].sort_values("layer")
            c = ROLE_COLORS[role]
            ax.plot(t.layer, t.test_acc, "o-", color=c, label=f"{role} (held out)")
            ax.plot(t.layer, t.train_acc, "--", color=c, alpha=0.5, label=f"{role} (train)")
            x = cm[(cm.direction_from == role) & (cm.probe == kind)].sort_values("layer")
            other = "post" if role == "base" else "base"
            ax.plot(x.layer, x.test_acc, ":", marker="s", ms=3, color=c, label=f"{role} probe on {other}")
        ax.axhline(0.5, color="gray", lw=0.6)
        _mark_probe_layer(ax, result)
        ax.set(title=PROBE_TITLES[kind], xlabel="layer (resid[l], l = 0 is the embedding)", ylim=(0, 1.02))
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("Truth probes by layer")
    return fig


def direction_cosine(result: RunResult) -> Figure:
    """Cosine between the base and the post direction at every layer, for both probes."""
    _check(result)
    cos = result.tables["direction_cosine"]
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    for kind, marker in (("mass_mean", "o"), ("logistic", "s")):
        t = cos[cos.probe == kind].sort_values("layer")
        ax.plot(t.layer, t.cosine, marker=marker, label=PROBE_TITLES[kind])
    ax.axhline(0, color="gray", lw=0.6)
    _mark_probe_layer(ax, result)
    ax.set(xlabel="layer", ylabel="cos(base, post)", ylim=(-1.05, 1.05), title="Base vs post truth direction")
    ax.legend(fontsize=8)
    return fig


def lodo_heatmap(result: RunResult, probe: str = "mass_mean", metric: str = "test_acc") -> Figure:
    """Leave-one-dataset-out accuracy (held-out dataset × layer), one panel per model."""
    _check(result)
    if "lodo" not in result.tables:
        raise ValueError("this truth run has no leave-one-dataset-out table (one dataset, or lodo=False)")
    lodo = result.tables["lodo"]
    lodo = lodo[lodo.probe == probe]
    names = sorted(lodo.held_out.unique())
    layers = sorted(lodo.layer.unique())
    fig = Figure(figsize=(4 + 0.4 * len(layers), 1.2 + 0.35 * len(names)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, role in zip(axes, ("base", "post")):
        t = lodo[lodo.model == role].pivot(index="held_out", columns="layer", values=metric)
        grid = t.reindex(index=names, columns=layers).to_numpy(dtype=float)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        if grid.size <= 400:
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(layers)), [str(l) for l in layers])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set(title=role, xlabel="layer")
    fig.colorbar(im, ax=axes, shrink=0.8, label=metric)
    fig.suptitle(f"Leave-one-dataset-out, {PROBE_TITLES[probe]}")
    return fig


def nie_table(result: RunResult) -> Figure:
    """The direction-from × applied-to NIE table (random-direction control as a third row) and the mean
    P(TRUE) − P(FALSE) of true / false statements without and with the intervention."""
    _check(result)
    if "nie" not in result.tables:
        raise ValueError("this truth run has no intervention results (no few-shot examples were available)")
    nie = result.tables["nie"]
    sources = [s for s in ("base", "post", "random") if s in set(nie.direction_from)]
    grid = np.full((len(sources), 2), np.nan)
    for r in nie.itertuples():
        grid[sources.index(r.direction_from), ("base", "post").index(r.applied_to)] = r.nie_mean
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=(1, 1.6))
    lim = max(1.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0)
    im = ax.imshow(grid, vmin=-lim, vmax=lim, cmap="RdBu_r")
    for i in range(grid.shape[0]):
        for j in range(2):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=10)
    ax.set_xticks([0, 1], ["base", "post"])
    ax.set_yticks(range(len(sources)), sources)
    ax.set(xlabel="applied to", ylabel="direction from", title="mean NIE")
    fig.colorbar(im, ax=ax, shrink=0.8)
    labels = [f"{r.direction_from}→{r.applied_to}" for r in nie.itertuples()]
    x = np.arange(len(labels))
    w = 0.2
    for k, (col, name, color) in enumerate(
        (
            ("pd_true", "true, clean", "tab:green"),
            ("pd_true_int", "true, −δ", "palegreen"),
            ("pd_false", "false, clean", "tab:red"),
            ("pd_false_int", "false, +δ", "lightsalmon"),
        )
    ):
        bx.bar(x + (k - 1.5) * w, nie[col], w, label=name, color=color)
    bx.axhline(0, color="gray", lw=0.6)
    bx.set_xticks(x, labels, fontsize=8, rotation=20)
    bx.set(ylabel="P(TRUE) − P(FALSE)", ylim=(-1.05, 1.05), title="few-shot prompt")
    bx.legend(fontsize=7, ncols=2)
    band = result.summary.get("band")
    fig.suptitle(f"Truth-direction intervention (layers {band})")
    return fig


def projection_histogram(result: RunResult) -> Figure:
    """Held-out statements projected on each model's mass-mean direction at the probe layer, by label
    (needs the activations, kept by default)."""
    _check(result)
    lp = result.summary["probe_layer"]
    split = result.tables["statements"].split.to_numpy()
    labels = result.tables["statements"].label.to_numpy()
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, role in zip(axes, ("base", "post")):
        key = f"activations.{role}"
        if key not in result.tensors:
            raise ValueError("this truth run kept no activations (keep_activations=False); no projections")
        X = result.tensors[key][:, lp].double().numpy()
        d = result.tensors[f"directions.mass_mean.{role}"][lp].double().numpy()
        s = X[split == "test"] @ d
        y = labels[split == "test"]
        bins = np.histogram_bin_edges(s, bins=30)
        ax.hist(s[y == 1], bins=bins, alpha=0.6, color="tab:green", label="true")
        ax.hist(s[y == 0], bins=bins, alpha=0.6, color="tab:red", label="false")
        ax.set(title=f"{role}, layer {lp}", xlabel="projection on the mass-mean direction")
        ax.legend(fontsize=8)
    fig.suptitle("Held-out statements along the truth direction")
    return fig


def figures(result: RunResult) -> dict[str, Figure]:
    """Every figure this run's contents allow, by file stem."""
    _check(result)
    out = {"truth_accuracy_by_layer": accuracy_by_layer(result), "truth_cosine": direction_cosine(result)}
    if "lodo" in result.tables:
        out["truth_lodo"] = lodo_heatmap(result)
    if "nie" in result.tables:
        out["truth_nie"] = nie_table(result)
    if "activations.base" in result.tensors:
        out["truth_projection"] = projection_histogram(result)
    return out


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 130) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)


__all__ = [
    "accuracy_by_layer",
    "direction_cosine",
    "figures",
    "lodo_heatmap",
    "nie_table",
    "projection_histogram",
    "save_figures",
]
