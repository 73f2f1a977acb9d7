"""Figures from saved run results: one module per analysis; functions take a RunResult, return Figures."""

from __future__ import annotations

from pathlib import Path


def write_figures(figs: dict, out_dir: str | Path, fmt: str = "png", dpi: int = 130) -> list[Path]:
    """Write named figures to `out_dir` (created) as `<name>.<fmt>`, release them, and return the paths."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = out / f"{name}.{fmt}"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        paths.append(path)
    return paths
