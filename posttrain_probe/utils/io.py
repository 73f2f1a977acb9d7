"""Atomic writes: nothing half-written is ever left where a reader looks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def finite_or_none(obj: Any) -> Any:
    """`obj` with every NaN / ±Infinity (Python or numpy float, in dicts, lists, tuples, arrays) replaced by None,
    so it can be written as valid JSON (`null`). Other values are returned as they are."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.floating | np.ndarray):
            return finite_or_none(obj.tolist())
    except ImportError:  # pragma: no cover
        pass
    return obj


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Valid JSON (RFC 8259): non-finite floats are written as null, never as NaN / Infinity tokens."""
    return json.dumps(finite_or_none(obj), indent=indent, sort_keys=False, default=_json_default, allow_nan=False)


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, directory: bool = False) -> None:
    """Give a file (0666) or folder (0777) made by tempfile (0600 / 0700) the mode a plain open() / mkdir() would
    give it under the user's umask, so a run's files are as readable by group and others as the user's others."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success rename it to `final`, on any error
    (Ctrl-C included) delete it, so `final` either appears complete or not at all."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; choose another --out or pass overwrite/--force")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        honour_umask(tmp, directory=True)
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class UnsafePathError(ValueError):
    """A name from a config or a file would leave the folder it is meant to stay in."""


def safe_join(root: str | Path, relative: str, what: str = "name") -> Path:
    """`root / relative` for a `relative` that comes from a config, CLI or JSON value: an absolute path, a
    drive, a NUL byte or `..` components that climb out of `root` raise `UnsafePathError` (one line)."""
    text = str(relative)
    parts = Path(text).parts
    bad = not text or "\x00" in text or Path(text).is_absolute() or Path(text).drive or text.startswith("~")
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        bad = bad or depth < 0
    if bad or depth == 0:
        raise UnsafePathError(
            f"{what} {text!r} is not a relative path inside {root}; use a plain name without '/', '..' or a leading /"
        )
    return Path(root) / text


def safe_name(name: str, what: str = "name") -> str:
    """A single file or folder name from a config or JSON value: no separators, not '.'/'..', not empty."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise UnsafePathError(f"{what} {name!r} must be a plain file name (no '/', '\\' or '..'); rename it")
    return name


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
