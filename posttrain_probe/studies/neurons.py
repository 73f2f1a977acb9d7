"""Study: do entropy (confidence-regulation) neurons explain the confidence difference between base and post?
Weight screens, Du et al.'s selection, mean ablation (total vs direct) against norm-matched controls."""

from __future__ import annotations

from pathlib import Path

from posttrain_probe.studies.common import Study


def run_entropy_neurons(study: Study) -> list[Path]:
    """OUT/neurons with figures."""
    study.check_out(["neurons"])
    return [study.run_probe("neurons")[0]]
