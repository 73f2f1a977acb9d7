"""Where the suite keeps its cache and where the shared public data sets live."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: `$POSTTRAIN_PROBE_CACHE`, else `~/.cache/posttrain_probe`."""
    env = os.environ.get("POSTTRAIN_PROBE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "posttrain_probe"


def shared_data_dir() -> Path | None:
    """The folder with our copies of public data sets (`$POSTTRAIN_PROBE_DATA`, else `../shared/data`
    next to the repository), or None when it is absent."""
    env = os.environ.get("POSTTRAIN_PROBE_DATA")
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parent.parent
    candidates += [repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None
