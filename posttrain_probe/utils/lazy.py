"""Lazy public names for packages whose modules are heavy (torch, transformers): importing the package costs
nothing, and each name is imported on first use (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: `names[public name] = submodule` (relative to `package`, or
    absolute when it contains a dot)."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        mod = names[name]
        return getattr(importlib.import_module(mod if "." in mod else f"{package}.{mod}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
