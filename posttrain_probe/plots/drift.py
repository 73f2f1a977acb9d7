"""Figure of internal change across a checkpoint series, lined up against the run's entropy curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..results import RunResult  # noqa: E402
from . import write_figures  # noqa: E402


def lined_up(result: RunResult) -> Figure:
    t = result.tables
    panels = ["weight_change"] + [k for k in ("cka", "direction_drift", "neuron_selection_overlap") if k in t]
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


def figures(result: RunResult) -> dict[str, Figure]:
    if result.analysis != "checkpoint_drift":
        raise ValueError(f"this is a {result.analysis!r} result, not checkpoint_drift")
    return {"drift_vs_entropy": lined_up(result)}


def save_figures(result: RunResult, out_dir: str | Path, fmt: str = "png", dpi: int = 120) -> list[Path]:
    """Write every figure of `result` to `out_dir` (created); returns the paths."""
    return write_figures(figures(result), out_dir, fmt, dpi)
