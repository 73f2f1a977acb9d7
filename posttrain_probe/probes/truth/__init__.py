"""Truthfulness directions in a base model and its post-trained twin (SPEC §2a; Marks & Tegmark 2023,
Du et al. 2025): per-layer probes, their transfer between datasets and models, and a causal test by
activation addition.

What `run_truth` (in `run`) computes (all on byte-identical statements for both models):
- resid[l] at the last statement token for every layer l = 0..L (see `model`), cached in the run dir;
- per model and layer, a mass-mean probe and a logistic-regression probe fitted on a seeded stratified train
  split, scored (accuracy, AUROC) on the held-out split, pooled and per dataset;
- leave-one-dataset-out: train on every other dataset, test on the held-out one (all its statements);
- base vs post: cosine of the directions per layer, and each model's probe scored on the other's activations;
- the few-shot TRUE/FALSE intervention: δ = ((μ_true − μ_false)·d̂) d̂ from the probe layer, added on false and
  subtracted on true statements at resid[l0..probe layer], at the last two statement tokens; metric
  P(TRUE) − P(FALSE) of the next token; NIE per SPEC for the 2×2 direction-from × applied-to table, plus a
  random direction of the same norm as a control;
- whether the answer reads the intervened cells at all (`reach`): the full residual of correctly judged
  true prompts patched into matched false prompts at those cells, and at the last position per layer; a note
  says when an NIE ≈ 0 comes from cells the model never reads rather than from the direction.

Choices the SPEC leaves open: the probe layer (default: the layer in 1..L−1 with the best mean held-out
accuracy of the two models for `direction_probe`, shared so the 2×2 table compares like with like; layer L
is excluded because an addition at the statement tokens after the last block cannot reach the answer);
the band (default: the probe layer and the max(1, round(L/10)) layers below it, never layer 0); few-shot
examples come from the train split of the statement's own dataset (half true, half false, seeded); NIE on
group means.
"""

from posttrain_probe.probes.base import Probe, lazy_exports

PROBE = Probe(
    name="truth",
    analysis="truth",
    title="Truth directions",
    question="Is there a linear truth direction, and is it shared by base and post?",
    explanation=(
        "Probe accuracy by layer for both models, cosine of their directions, and the normalised indirect effect "
        "of adding the direction from one model to the other (2×2)."
    ),
    figures="posttrain_probe.probes.truth.figures",
    verdicts="posttrain_probe.probes.truth.verdicts:verdicts",
    command="truth",
    help="truth directions: probes per layer, transfer, few-shot intervention (NIE)",
    config="posttrain_probe.probes.truth.config:TruthConfig",
    data="posttrain_probe.probes.truth.config:TruthData",
    load_inputs="posttrain_probe.probes.truth.run:load_inputs",
    run="posttrain_probe.probes.truth.run:run",
    summarize="posttrain_probe.probes.truth.run:format_summary",
    artifacts="posttrain_probe.probes.truth.run:artifacts",
    backend="bridge",
    workload={
        "smoke": {"max_per_dataset": 8, "n_intervene": 8, "lodo": "none"},
        "quick": {"max_per_dataset": 300, "n_intervene": 40},
        "toy": {"max_per_dataset": 2000, "n_intervene": 200},
        "real": {"max_per_dataset": 1000, "n_intervene": 200},
    },
)

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TruthConfig": "config",
        "TruthData": "config",
        "LODO_MODES": "config",
        "PROBE_KINDS": "config",
        "PROMPT_FORMATS": "config",
        "TruthInputs": "run",
        "load_inputs": "run",
        "run_truth": "run",
        "save_truth_vectors": "run",
        "format_summary": "run",
        "ANALYSIS": "data",
        "load_truth_statements": "data",
        "choose_probe_layer": "tables",
        "default_band": "tables",
    },
)
__all__ = ["PROBE", *sorted(__dir__())]
