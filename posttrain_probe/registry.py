"""The registry of analyses (lm-evaluation-harness style): one line per probe or analysis, resolved lazily.

The command line, the demo and studies, the report's sections and the verdict table are generated from it: a new
probe is its subpackage (see `posttrain_probe.probes.base`) plus one line here (or one `register` call).
Entries are "module:attribute" strings, so importing the registry (and `posttrain-probe --help`) loads no
probe code.
"""

from __future__ import annotations

from posttrain_probe.probes.base import Analysis, Probe, resolve

# in report / demo order: knowledge (tracing, patching), directions (truth, refusal), neurons, then RLVR
_ENTRIES: dict[str, str] = {
    "tracing": "posttrain_probe.probes.tracing:PROBE",
    "patching": "posttrain_probe.probes.patching:PROBE",
    "truth": "posttrain_probe.probes.truth:PROBE",
    "neurons": "posttrain_probe.probes.neurons:PROBE",
    "refusal": "posttrain_probe.probes.refusal:PROBE",
    "dynamics": "posttrain_probe.analysis.specs:DYNAMICS",
    "drift": "posttrain_probe.analysis.specs:DRIFT",
}
_BUILTIN = frozenset(_ENTRIES)
_CACHE: dict[str, Analysis] = {}


def register(name: str, target: str) -> None:
    """Add (or replace) an entry: `target` is "module:attribute" of an `Analysis` or `Probe` named `name`."""
    if ":" not in target:
        raise ValueError(f"registry target {target!r}; write it as 'package.module:ATTRIBUTE'")
    _ENTRIES[name] = target
    _CACHE.pop(name, None)


def unregister(name: str) -> None:
    _ENTRIES.pop(name, None)
    _CACHE.pop(name, None)


def is_builtin(name: str) -> bool:
    """Whether `name` is one of the package's own entries (a fresh Python process knows it without `register`)."""
    return name in _BUILTIN and _ENTRIES.get(name, "").startswith("posttrain_probe.")


def names() -> list[str]:
    return list(_ENTRIES)


def get(name: str) -> Analysis:
    """The entry `name`; an unknown name is an error that lists what is available."""
    if name not in _ENTRIES:
        raise ValueError(f"unknown analysis {name!r}; available: {', '.join(_ENTRIES)}")
    if name not in _CACHE:
        entry = resolve(_ENTRIES[name])
        if not isinstance(entry, Analysis) or entry.name != name:
            raise TypeError(f"registry entry {name!r} ({_ENTRIES[name]}) is not an Analysis named {name!r}")
        _CACHE[name] = entry
    return _CACHE[name]


def probes() -> list[Probe]:
    """Every registered probe of a base/post pair, in registry order."""
    return [e for e in (get(n) for n in _ENTRIES) if isinstance(e, Probe)]


def by_analysis(analysis: str) -> Analysis | None:
    """The entry whose `RunResult.analysis` id is `analysis` (None when no entry claims it)."""
    for n in _ENTRIES:
        e = get(n)
        if e.analysis == analysis:
            return e
    return None
