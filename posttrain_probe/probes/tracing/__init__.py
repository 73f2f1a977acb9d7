"""Causal tracing on a base model and its post-trained twin (SPEC §1a; Meng et al. 2022, Du et al. 2025).

`run_tracing(pair, facts, config)` (in `run`) tokenizes the facts once (subject spans by offset alignment; facts
whose subject cannot be aligned are reported and skipped), keeps per model the facts it answers correctly (the
answer's first token is the argmax at the last prompt position), traces each model on its own known facts
(batched restorations, `posttrain_probe.pair.restore`), and summarizes:
- AIE per kind × ROME token class × layer, per model over its own known facts ("own") and over the facts
  both models know ("common"), with percentile-bootstrap 95% intervals over facts;
- base − post per-fact differences on the common facts (paired bootstrap);
- Pearson correlation of the base and post maps per kind (class maps, and all per-fact cells);
- each model's peak (token class, layer) per kind.
Noise conventions are in `core`'s docstring. Prompts are the facts' raw text for both models (byte-identical
ids; no chat template), as in Du et al.'s knowledge-storage tracing. The restoration window is derived from
the depth (`config.tracing_window`) unless given.
"""

from posttrain_probe.probes.base import Probe, lazy_exports

PROBE = Probe(
    name="tracing",
    analysis="causal_tracing",
    title="Causal tracing",
    question="Where are facts stored, and did post-training move them? (ROME causal tracing)",
    explanation=(
        "Heat maps show the average indirect effect of restoring the clean state at each (token, layer) in a run "
        "whose subject embeddings were noised. Meng et al. find an MLP peak at the last subject token in early-"
        "middle layers; Du et al. find the same map in base and post-trained models."
    ),
    figures="posttrain_probe.probes.tracing.figures",
    verdicts="posttrain_probe.probes.tracing.verdicts:verdicts",
    command="trace",
    help="ROME causal tracing on both models (AIE maps, base − post)",
    config="posttrain_probe.probes.tracing.config:TracingConfig",
    data="posttrain_probe.probes.tracing.config:TracingData",
    load_inputs="posttrain_probe.probes.tracing.run:load_inputs",
    run="posttrain_probe.probes.tracing.run:run",
    summarize="posttrain_probe.probes.tracing.run:format_summary",
    workload={
        "smoke": {"max_facts": 6, "n_samples": 2, "n_boot": 50},
        "quick": {"max_facts": 40, "n_samples": 4},
        "toy": {"max_facts": 180, "n_samples": 10},
        "real": {"max_facts": 400, "n_samples": 10},
    },
)

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TracingConfig": "config",
        "TracingData": "config",
        "KINDS": "config",
        "NOISE_CALIBRATIONS": "config",
        "tracing_window": "config",
        "TracingInputs": "run",
        "load_inputs": "run",
        "run_tracing": "run",
        "format_summary": "run",
        "ANALYSIS": "result",
        "prepare_facts": "core",
        "embedding_std": "core",
        "trace_model": "core",
        "clean_answer_probs": "core",
        "TOKEN_CLASSES": "posttrain_probe.pair.spans",
        "SubjectNotFoundError": "posttrain_probe.pair.spans",
        "find_token_span": "posttrain_probe.pair.spans",
    },
)
__all__ = ["PROBE", *sorted(__dir__())]
