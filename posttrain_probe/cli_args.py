"""Arguments and checks shared by every `posttrain-probe BASE POST --out DIR` analysis subcommand."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_pair_arguments(
    p: argparse.ArgumentParser, backend: str = "nnsight", force_help: str = "overwrite --out"
) -> None:
    """BASE, POST, --out, --force, --figures, --backend, --device, --dtype."""
    p.add_argument("base", help="hub id, local HF directory or toyworld:base")
    p.add_argument("post", help="hub id, local HF directory or toyworld:post")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--figures", action="store_true", help="also save figures into OUT/figures")
    p.add_argument("--backend", default=backend, choices=["bridge", "nnsight"])
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)


def fresh_out_dir(args: argparse.Namespace, hint: str = "pass --force or another --out") -> Path:
    """The run directory of `args.out`; refuses an existing one unless --force."""
    out = Path(args.out)
    if out.exists() and not args.force:
        raise FileExistsError(f"run dir {out} already exists; {hint}")
    return out
