"""Figure of internal change across a checkpoint series, lined up against the run's entropy curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..results import RunResult
from . import write_figures

# one colormap per kind of module, so that a module's colour says what it is (shade: its layer)
_KIND_STYLE = {"attn": ("Blues", "-"), "mlp": ("Oranges", "--"), "norm": ("Greens", ":")}
_OTHER_COLORS = {"embed": "tab:red", "unembed": "tab:brown", "final_norm": "tab:purple"}


def module_styles(modules: list[str]) -> dict[str, dict]:
    """Line style of each module of the weight-change panel: `layers.{l}.{kind}` get their kind's colormap
    (attention blue solid, MLP orange dashed, norms green dotted), darker with depth; other modules a fixed colour."""
    import matplotlib

    layered: dict[str, list[int]] = {}
    for m in modules:
        parts = m.split(".")
        if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
            layered.setdefault(parts[2], []).append(int(parts[1]))
    styles = {}
    for m in modules:
        parts = m.split(".")
        if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
            cmap, ls = _KIND_STYLE.get(parts[2], ("Purples", "-."))
            layers = sorted(layered[parts[2]])
            shade = 0.4 + 0.55 * (layers.index(int(parts[1])) / max(len(layers) - 1, 1))
            styles[m] = {"color": matplotlib.colormaps[cmap](shade), "ls": ls}
        else:
            styles[m] = {"color": _OTHER_COLORS.get(m, "tab:red"), "ls": "-", "lw": 1.6}
    return styles


def _module_order(module: str) -> tuple:
    parts = module.split(".")
    if len(parts) == 3 and parts[1].isdigit():
        return (1, list(_KIND_STYLE).index(parts[2]) if parts[2] in _KIND_STYLE else 9, int(parts[1]))
    return (0 if module == "embed" else 2, 0, module)


def _legend_outside(ax, n: int) -> None:
    """The legend right of the axes (beyond the entropy axis), never over the data."""
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.1, 1.0), ncol=2 if n > 10 else 1, frameon=False)


def lined_up(result: RunResult) -> Figure:
    t = result.tables
    optional = ("cka", "direction_drift", "tracing_change", "neuron_selection_overlap", "neuron_effects")
    panels = ["weight_change"] + [k for k in optional if k in t]
    heights = [3.2 if name == "weight_change" else 2.3 for name in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, sum(heights)), sharex=True, gridspec_kw={"height_ratios": heights}
    )
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, name in zip(axes, panels):
        df = t[name]
        if not len(df):
            ax.text(0.5, 0.5, f"no {name.replace('_', ' ')} rows in this run", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            continue
        if name == "weight_change":
            modules = sorted(df["module"].unique(), key=_module_order)
            styles = module_styles(modules)
            for module in modules:
                sub = df[df["module"] == module]
                style = {"lw": 1, **styles[module]}
                ax.plot(sub["step"], sub["relative_change"], marker=".", ms=3, label=module, **style)
            ax.set_ylabel("‖ΔW‖/‖W‖")
            _legend_outside(ax, len(modules))
        elif name == "cka":
            for layer, sub in df.groupby("layer"):
                ax.plot(sub["step"], sub["cka_to_start"], marker=".", label=f"layer {layer}")
            ax.set_ylabel("CKA to start")
            _legend_outside(ax, df["layer"].nunique())
        elif name == "direction_drift":
            groups = df.groupby(["direction", "layer"])
            for (direction, layer), sub in groups:
                ax.plot(sub["step"], sub["cosine_to_start"], lw=1, label=f"{direction} L{layer}")
            ax.set_ylabel("cos to start")
            _legend_outside(ax, groups.ngroups)
        elif name == "tracing_change":
            for kind, sub in df.groupby("kind"):
                ax.plot(sub["step"], sub["pearson_to_start"], marker=".", label=f"tracing map ({kind})")
            ax.set_ylabel("r to start map")
            _legend_outside(ax, df["kind"].nunique())
        elif name == "neuron_effects":
            for set_name, sub in df.groupby("set"):
                ax.plot(sub["step"], sub["dH_total"], marker=".", label=f"ΔH total, {set_name}")
                ax.plot(sub["step"], sub["dH_direct"], ls="--", lw=0.8, label=f"ΔH direct, {set_name}")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_ylabel("ΔH ablation")
            _legend_outside(ax, 2 * df["set"].nunique())
        elif name == "neuron_selection_overlap":
            for rule, sub in df.groupby("rule"):
                ax.plot(sub["step"], sub["iou_first"], marker=".", label=f"entropy neurons ({rule})")
            ax.set_ylabel("IoU with start")
            _legend_outside(ax, df["rule"].nunique())
        if "entropy_curve" in t:
            tw = ax.twinx()
            ec = t["entropy_curve"]
            tw.plot(ec["step"], ec["entropy_mean"], color="black", lw=0.8, alpha=0.5)
            tw.set_ylabel("entropy", fontsize=7)
    axes[-1].set_xlabel("RL step")
    fig.suptitle("internal change along the run (grey: policy entropy, right axis)", fontsize=9)
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
