"""One parser for where a model or a data set comes from: a toy-world alias, a local path, or a hub id.

toyworld:<name>             the default preset's <name> (base, post, or a data set such as arithmetic)
toyworld:<preset>:<name>    the same for another preset (quick, default, large)
an existing path            a local folder or file
anything else               a hub id (left to the loader)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TOY_PREFIX = "toyworld:"
DEFAULT_PRESET = "default"


@dataclass(frozen=True)
class Source:
    """A parsed source: `kind` is "toyworld", "local" or "hub"; toy-world sources carry `preset` and `name`."""

    text: str
    kind: str
    preset: str | None = None
    name: str | None = None

    @property
    def is_toy(self) -> bool:
        return self.kind == "toyworld"

    @property
    def path(self) -> Path | None:
        return Path(self.text).expanduser() if self.kind == "local" else None


def parse_source(source: str | os.PathLike, what: str = "source") -> Source:
    """Parse `source`; a malformed toy-world alias is a one-line error naming the accepted forms."""
    text = str(source).strip()
    if text.startswith(TOY_PREFIX):
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts[1:]):
            raise ValueError(
                f"bad toy-world alias {text!r} for the {what}; write toyworld:<name> or toyworld:<preset>:<name>"
            )
        preset = parts[1] if len(parts) == 3 else DEFAULT_PRESET
        return Source(text, "toyworld", preset=preset, name=parts[-1])
    if text and Path(text).expanduser().exists():
        return Source(text, "local")
    return Source(text, "hub")


def is_toy_alias(source: str | os.PathLike) -> bool:
    """Whether `source` is written as a toy-world alias (without building anything)."""
    return str(source).strip().startswith(TOY_PREFIX)
