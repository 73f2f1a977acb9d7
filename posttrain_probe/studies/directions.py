"""Study: are truth and refusal linear directions, shared by base and post? Truth probes per layer with the
few-shot intervention 2×2, the refusal direction with ablation/addition and transfer, and both exported as
steering vectors (OUT/<run>/steering/*.safetensors + .json)."""

from __future__ import annotations

from pathlib import Path

from posttrain_probe.studies.common import Study

RUNS = ("truth", "refusal")


def run_directions(study: Study) -> list[Path]:
    """OUT/truth and OUT/refusal with figures and steering vectors."""
    study.check_out(RUNS)
    pair = study.load_pair()
    return [study.run_probe(name, pair)[0] for name in RUNS]
