"""The verdict table of a set of saved results: every registered analysis's verdicts, in registry order, and
`verdicts.json` (paper, claim, verdict, estimate, ci_low, ci_high, n, threshold, rule, evidence, section).

Verdicts are computed from saved results only (never from a model); each analysis's own `verdicts` module
decides its claims (see `posttrain_probe.verdict` for the rule that turns an interval into a word).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from posttrain_probe import registry
from posttrain_probe.results import RunResult
from posttrain_probe.utils.io import atomic_write_text
from posttrain_probe.verdict import Verdict


def collect_verdicts(
    results: Iterable[RunResult], extra: Mapping[str, Sequence[Verdict]] | None = None
) -> list[Verdict]:
    """Every verdict the results support, in registry order; `extra[name]` (verdicts decided elsewhere, e.g.
    by the toy build's report) follow the verdicts of the registry entry `name`."""
    by_analysis = {res.analysis: res for res in results}
    out: list[Verdict] = []
    for name in registry.names():
        entry = registry.get(name)
        if entry.analysis in by_analysis:
            out += entry.judge(by_analysis[entry.analysis])
        out += list((extra or {}).get(name, ()))
    return out


def write_verdicts(path: str | Path, verdicts: Sequence[Verdict]) -> Path:
    """`verdicts.json`: a list of `Verdict.as_dict()` rows (valid JSON: undefined numbers are null)."""
    path = Path(path)
    atomic_write_text(path, json.dumps([v.as_dict() for v in verdicts], indent=1, allow_nan=False) + "\n")
    return path
