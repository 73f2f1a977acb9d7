"""Regenerate every figure from saved run directories only: `posttrain-probe figures RESULTS_DIR --out DIR`.

Nothing but results is read: each run directory's result.json, tables and tensors (`read_run`), drawn by its
analysis's plot module. Figures are written as `<analysis>__<figure>.<fmt>`, the names the HTML report's
`figures_dir` uses; when several run directories hold the same analysis, their path below RESULTS_DIR is
added (`<analysis>__<a_b>__<figure>.<fmt>` for `a/b/`), so the names stay stable from one run to the next.

A damaged run directory (result.json unreadable, truncated or not ours, a corrupt table or tensor file, a summary its
plot module cannot draw) is skipped with a one-line warning naming it and the problem; the healthy ones are drawn,
and the command exits 1 when anything was skipped.
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

from . import write_figures


def find_run_dirs(results_dir: str | Path) -> list[Path]:
    """Folders at or below `results_dir` that hold a result.json (readable or not; not inside another such
    folder, not hidden temporary folders), in sorted path order."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} not found; pass a folder of run dirs (e.g. runs/demo)")
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .<name>.tmp-* are unfinished atomic writes
        if "result.json" in files:  # results.RESULT_FILE (not imported: `--help` stays light)
            found.append(Path(here))
            dirs.clear()
    return sorted(found)


def _problem(e: BaseException) -> str:
    """An exception as one line: RunDirError messages as they are, anything else with its type."""
    text = str(e).splitlines()[0] if str(e) else ""
    from posttrain_probe.results import RunDirError

    return text if isinstance(e, RunDirError) else f"{type(e).__name__}: {text}".rstrip(": ")


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
    skipped: list[str] | None = None,
) -> list[Path]:
    """Draw the figures of every run directory under `results_dir` into `out_dir`; returns the written paths.
    `only` keeps the figures whose name matches one of its glob patterns (e.g. `rlvr_dynamics__*`); a pattern
    that matches nothing is an error. Run directories of an analysis without figures are skipped; a folder with
    no run directory is an error. A damaged run directory is skipped and the healthy ones drawn: one line per
    skipped run ("<run>: <problem>") goes to `skipped` when given, else a `RunDirError` naming them is raised
    after the healthy ones are drawn."""
    import matplotlib.pyplot as plt

    from posttrain_probe.results import RunDirError, read_run

    root = Path(results_dir)
    found = find_run_dirs(root)
    if not found:
        raise FileNotFoundError(f"no run directories (result.json) under {root}; pass a demo or experiment output")
    problems: list[str] = []
    runs = []
    for rd in found:
        try:
            runs.append((rd, read_run(rd)))
        except (RunDirError, OSError, ValueError, KeyError, TypeError) as e:
            problems.append(f"{rd}: {_problem(e)}")
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
        open_before = set(plt.get_fignums())
        try:
            figs = {f"{prefix}__{name}": fig for name, fig in mod.figures(res).items()}
        except Exception as e:  # a damaged summary or table its plot module cannot draw: skip this run only
            for num in set(plt.get_fignums()) - open_before:
                plt.close(num)
            problems.append(f"{rd}: cannot draw its figures ({_problem(e)}); the run dir is damaged or incomplete")
            continue
        if only:
            for name in [n for n in figs if not any(fnmatch.fnmatch(n, pat) for pat in only)]:
                plt.close(figs.pop(name))
        paths += write_figures(figs, out_dir, fmt, dpi)
    if skipped is not None:
        skipped += problems
    elif problems:
        raise RunDirError(f"skipped {len(problems)} damaged run dir(s), first {problems[0]}")
    unmatched = [pat for pat in only or () if not any(fnmatch.fnmatch(p.stem, pat) for p in paths)]
    if unmatched and not problems:
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
    skipped: list[str] = []
    paths = make_figures(args.results, args.out, args.format, args.dpi, only=args.only, skipped=skipped)
    for p in paths:
        print(p)
    for line in skipped:
        print(f"warning: skipped {line}", file=sys.stderr)
    print(f"wrote {len(paths)} figures to {args.out}", file=sys.stderr)
    if skipped:
        print(f"error: {len(skipped)} damaged run dir(s) skipped (warnings above); fix or remove them", file=sys.stderr)
    return 1 if skipped else 0
