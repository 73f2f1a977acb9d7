"""Study: where are facts stored, and did post-training move them? Causal tracing (ROME) of both models, then
true/false patching within each model and across them (Du et al. 2025)."""

from __future__ import annotations

from pathlib import Path

from posttrain_probe.studies.common import Study

RUNS = ("tracing", "patching")


def run_knowledge_localization(study: Study) -> list[Path]:
    """OUT/tracing and OUT/patching (with cross-model directions), each with figures."""
    study.check_out(RUNS)
    pair = study.load_pair()
    return [study.run_probe(name, pair)[0] for name in RUNS]
