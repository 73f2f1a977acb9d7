"""Study: do entropy (confidence-regulation) neurons explain the confidence difference between base and post?
Weight screens, Du et al.'s selection, mean ablation (total vs direct) against norm-matched controls."""

from __future__ import annotations

from pathlib import Path

from posttrain_probe.studies.common import Study


def run_entropy_neurons(study: Study) -> list[Path]:
    """OUT/neurons with figures."""
    from posttrain_probe.probes.neurons import NeuronsConfig, load_texts, run_neurons

    study.check_out(["neurons"])
    texts = load_texts(study.sources.texts)
    cfg = NeuronsConfig(
        n_ref=study.pick(16, 64, 256, 256),
        n_eval=study.pick(8, 32, 64, 128),
        max_tokens=study.pick(32, 64, 64, 128),
        n_controls=study.pick(1, 2, 2, 2),
        n_control_sets=study.pick(2, 3, 10, 10),
        batch_rows=study.pick(32, 128, 128, 64),
        seed=study.seed,
        progress=study.progress,
    )
    res = run_neurons(study.load_pair(), texts, cfg, text_source=study.sources.texts)
    return [study.save("neurons", res, "posttrain_probe.probes.neurons.figures")]
