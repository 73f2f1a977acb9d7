"""Regenerate every figure from saved run directories only: `posttrain-probe figures RESULTS_DIR --out DIR`.

Nothing but results is read: each run directory's result.json, tables and tensors (`read_run`), drawn by its
analysis's plot module. Figures are written as `<analysis>__<figure>.<fmt>`, the names the HTML report's
`figures_dir` uses; when several run directories hold the same analysis, their path below RESULTS_DIR is
added (`<analysis>__<a_b>__<figure>.<fmt>` for `a/b/`), so the names stay stable from one run to the next.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from posttrain_probe.results import is_run_dir, read_run

from . import write_figures


def find_run_dirs(results_dir: str | Path) -> list[Path]:
    """Run directories at or below `results_dir` (not inside another run directory), in sorted path order."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} not found; pass a folder of run dirs (e.g. runs/demo)")
    found = []
    for here, dirs, _ in os.walk(root):
        dirs.sort()
        if is_run_dir(here):
            found.append(Path(here))
            dirs.clear()
    return sorted(found)


def plot_module(analysis: str):
    """The plot module of `analysis`, or None when it has no figures."""
    from posttrain_probe import registry

    entry = registry.by_analysis(analysis)
    return importlib.import_module(entry.figures) if entry else None


def make_figures(
    results_dir: str | Path,
    out_dir: str | Path,
    fmt: str = "png",
    dpi: int = 130,
    only: Sequence[str] | None = None,
) -> list[Path]:
    """Draw the figures of every run directory under `results_dir` into `out_dir`; returns the written paths.
    `only` keeps the figures whose name matches one of its glob patterns (e.g. `rlvr_dynamics__*`); a pattern
    that matches nothing is an error. Run directories of an analysis without figures are skipped; a folder with
    no run directory is an error."""
    import matplotlib.pyplot as plt

    root = Path(results_dir)
    runs = [(rd, read_run(rd)) for rd in find_run_dirs(root)]
    if not runs:
        raise FileNotFoundError(f"no run directories (result.json) under {root}; pass a demo or experiment output")
    count = Counter(res.analysis for _, res in runs)
    paths: list[Path] = []
    for rd, res in runs:
        mod = plot_module(res.analysis)
        if mod is None:
            continue
        prefix = res.analysis
        if count[res.analysis] > 1:
            rel = rd.relative_to(root).as_posix().replace("/", "_") or rd.name
            prefix = f"{res.analysis}__{rel}"
        figs = {f"{prefix}__{name}": fig for name, fig in mod.figures(res).items()}
        if only:
            for name in [n for n in figs if not any(fnmatch.fnmatch(n, pat) for pat in only)]:
                plt.close(figs.pop(name))
        paths += write_figures(figs, out_dir, fmt, dpi)
    unmatched = [pat for pat in only or () if not any(fnmatch.fnmatch(p.stem, pat) for p in paths)]
    if unmatched:
        raise ValueError(f"--only {' '.join(unmatched)} matched no figure; names look like rlvr_dynamics__curves")
    return paths


def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register `figures RESULTS_DIR --out DIR`."""
    p = sub.add_parser("figures", help="redraw every figure from saved run dirs (e.g. runs/demo) into one folder")
    p.add_argument("results", help="folder holding run directories (searched recursively)")
    p.add_argument("--out", default="figures", help="folder for the figures (default: figures/)")
    p.add_argument("--format", default="png", choices=["png", "pdf", "svg"], help="image format (default: png)")
    p.add_argument("--dpi", type=int, default=130, help="resolution of raster formats (default: 130)")
    p.add_argument(
        "--only", nargs="+", default=None, metavar="PATTERN", help="keep figures whose name matches a glob pattern"
    )
    p.set_defaults(func=_cli_figures)


def _cli_figures(args: argparse.Namespace) -> int:
    if args.dpi < 10:
        raise ValueError(f"--dpi {args.dpi} is too small; use e.g. 130")
    paths = make_figures(args.results, args.out, args.format, args.dpi, only=args.only)
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} figures to {args.out}", file=sys.stderr)
    return 0
