"""Study: what changes inside the model along an RLVR run, and what did post-training change? Weight change,
CKA, truth/refusal direction drift, causal-tracing map change and entropy neurons per checkpoint of a GRPO run
from the post model (lined up with its entropy curve), and the same measures from base to post."""

from __future__ import annotations

import json
from pathlib import Path

from .common import Study

RUNS = ("drift_rlvr", "drift_base_to_post")


def run_checkpoint_drift(study: Study) -> list[Path]:
    """OUT/drift_rlvr over the checkpoints of `--run` (default: a GRPO run trained into OUT/rlvr/grpo) and
    OUT/drift_base_to_post, each with figures."""
    from posttrain_probe.analysis.drift import DriftConfig, compare_checkpoints
    from posttrain_probe.analysis.drift_inputs import expand_checkpoints, load_drift_inputs

    from .rlvr import train_runs

    study.check_out(RUNS)
    run = study.extra.get("run")
    if run is None:
        run = train_runs(study, ("grpo",), study.extra.get("steps"), study.extra.get("task"))[0]
    run = Path(run)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run} is not an RLVR run directory (no config.json); pass the --out of a run")
    start = json.loads((run / "config.json").read_text())["model"]
    checkpoints, metrics = expand_checkpoints([str(run)])
    cfg = DriftConfig(
        max_facts=study.pick(4, 30, 100, 100),
        tracing_samples=study.pick(2, 3, 5, 5),
        n_select=study.pick(4, 10, 10, 10),
        n_ref=study.pick(8, 48, 64, 128),
        n_eval=study.pick(6, 16, 32, 64),
        seed=study.seed,
    )
    inputs = load_drift_inputs(
        study.post,
        max_facts=cfg.max_facts,
        max_statements=study.pick(16, 200, 200, 400),
        max_instructions=study.pick(4, 32, 32, 64),
        n_cka_texts=study.pick(8, 64, 64, 128),
        n_neuron_texts=cfg.n_ref + cfg.n_eval,
        seed=study.seed,
    )
    kw = dict(
        statements=inputs.statements,
        harmful=inputs.harmful,
        harmless=inputs.harmless,
        cka_texts=inputs.cka_texts,
        facts=inputs.facts,
        neuron_texts=inputs.neuron_texts,
        config=cfg,
        backend=study.backend,
        device=study.device,
        dtype=study.dtype,
    )
    res = compare_checkpoints(start, checkpoints, metrics_jsonl=metrics, **kw)
    res.config["data_sources"] = inputs.sources
    out = [study.save("drift_rlvr", res, "posttrain_probe.plots.drift")]
    res = compare_checkpoints(study.base, [study.post], **kw)
    res.config["data_sources"] = inputs.sources
    out.append(study.save("drift_base_to_post", res, "posttrain_probe.plots.drift"))
    return out
