"""Figure of internal change across a checkpoint series, lined up against the run's entropy curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..results import RunResult
from . import write_figures


def lined_up(result: RunResult) -> Figure:
    t = result.tables
    optional = ("cka", "direction_drift", "tracing_change", "neuron_selection_overlap", "neuron_effects")
    panels = ["weight_change"] + [k for k in optional if k in t]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.3 * len(panels)), sharex=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, name in zip(axes, panels):
        df = t[name]
        if name == "weight_change" and len(df):
            for module, sub in df.groupby("module"):
                ax.plot(sub["step"], sub["relative_change"], marker=".", lw=1, label=module)
            ax.set_ylabel("‖ΔW‖/‖W‖")
            ax.legend(fontsize=6, ncol=4)
        elif name == "cka":
            for layer, sub in df.groupby("layer"):
                ax.plot(sub["step"], sub["cka_to_start"], marker=".", label=f"layer {layer}")
            ax.set_ylabel("CKA to start")
            ax.legend(fontsize=6, ncol=4)
        elif name == "direction_drift":
            for (direction, layer), sub in df.groupby(["direction", "layer"]):
                ax.plot(sub["step"], sub["cosine_to_start"], lw=1, label=f"{direction} L{layer}")
            ax.set_ylabel("cos to start")
            ax.legend(fontsize=6, ncol=4)
        elif name == "tracing_change":
            for kind, sub in df.groupby("kind"):
                ax.plot(sub["step"], sub["pearson_to_start"], marker=".", label=f"tracing map ({kind})")
            ax.set_ylabel("r to start map")
            ax.legend(fontsize=6)
        elif name == "neuron_effects":
            for set_name, sub in df.groupby("set"):
                ax.plot(sub["step"], sub["dH_total"], marker=".", label=f"ΔH total, {set_name}")
                ax.plot(sub["step"], sub["dH_direct"], ls="--", lw=0.8, label=f"ΔH direct, {set_name}")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_ylabel("ΔH ablation")
            ax.legend(fontsize=6, ncol=2)
        elif name == "neuron_selection_overlap":
            for rule, sub in df.groupby("rule"):
                ax.plot(sub["step"], sub["iou_first"], marker=".", label=f"entropy neurons ({rule})")
            ax.set_ylabel("IoU with start")
            ax.legend(fontsize=6)
        if "entropy_curve" in t:
            tw = ax.twinx()
            ec = t["entropy_curve"]
            tw.plot(ec["step"], ec["entropy_mean"], color="black", lw=0.8, alpha=0.5)
            tw.set_ylabel("entropy", fontsize=7)
    axes[-1].set_xlabel("RL step")
    fig.suptitle("internal change along the run (black: policy entropy)", fontsize=9)
    fig.tight_layout()
    return fig


def tracing_maps(result: RunResult) -> Figure:
    """Causal-tracing AIE maps (token class × layer) of the start and the last checkpoint and their
    difference, one row per restored kind."""
    df = result.tables["tracing_maps"]
    kinds = list(dict.fromkeys(df["kind"]))
    classes = list(dict.fromkeys(df["token_class"]))
    first, last = int(df["step"].min()), int(df["step"].max())
    fig, axes = plt.subplots(len(kinds), 3, figsize=(11, 2.6 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds):
        maps = {
            s: df[(df.kind == kind) & (df.step == s)]
            .pivot(index="token_class", columns="layer", values="aie")
            .reindex(classes)
            .to_numpy()
            for s in (first, last)
        }
        vmax = max(float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0 for m in maps.values()) or 1.0
        diff = maps[last] - maps[first]
        dmax = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.0
        for ax, (title, m, lim, cmap) in zip(
            row,
            (
                (f"{kind}: step {first}", maps[first], vmax, "Purples"),
                (f"{kind}: step {last}", maps[last], vmax, "Purples"),
                (f"{kind}: step {last} − step {first}", diff, dmax or 1.0, "RdBu_r"),
            ),
        ):
            lo = -lim if cmap == "RdBu_r" else min(0.0, float(np.nanmin(m)) if np.isfinite(m).any() else 0.0)
            im = ax.imshow(m, aspect="auto", cmap=cmap, vmin=lo, vmax=lim)
            ax.set_yticks(range(len(classes)), classes, fontsize=6)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("layer", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("causal-tracing AIE along the run (same facts and noise for every checkpoint)", fontsize=9)
    fig.tight_layout()
    return fig


def figures(result: RunResult) -> dict[str, Figure]:
    if result.analysis != "checkpoint_drift":
        raise ValueError(f"this is a {result.analysis!r} result, not checkpoint_drift")
    out = {"drift_vs_entropy": lined_up(result)}
    if "tracing_maps" in result.tables:
        out["tracing_maps"] = tracing_maps(result)
    return out


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 120) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)
