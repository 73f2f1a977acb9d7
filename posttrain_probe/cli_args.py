"""Arguments and checks shared by every `posttrain-probe BASE POST --out DIR` analysis subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .utils.errors import USER_ERRORS, one_line_errors  # noqa: F401  (re-exported: the CLI and studies use them)


def add_pair_arguments(
    p: argparse.ArgumentParser, backend: str = "nnsight", force_help: str = "overwrite --out"
) -> None:
    """BASE, POST, --out, --force, --figures, --backend, --device, --dtype."""
    p.add_argument("base", help="hub id, local HF directory or toyworld:base")
    p.add_argument("post", help="hub id, local HF directory or toyworld:post")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--figures", action="store_true", help="also save figures into OUT/figures")
    p.add_argument(
        "--backend", default=backend, choices=["bridge", "nnsight"], help=f"hooking backend (default: {backend})"
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N | auto (default: the model's own placement)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the checkpoint's)")


def fresh_out_dir(args: argparse.Namespace, hint: str = "pass --force or another --out") -> Path:
    """The run directory of `args.out`; refuses an existing one unless --force."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"run dir {out} already exists; {hint}")
    return out


def finish_run(args: argparse.Namespace, out: Path, plots: str, summary: str) -> int:
    """After the run dir is written: its figures, drawn from the saved result, when --figures; the summary on stdout
    and the run dir on stderr. Returns the exit code (0)."""
    if args.figures:
        from .results import read_run

        importlib.import_module(plots).save_figures(read_run(out), out / "figures")
    print(summary)
    print(f"wrote {out}", file=sys.stderr)
    return 0
