"""True/false activation patching within and across a base model and its post-trained twin (SPEC §1b;
Du et al. 2025, "post-training adapts base representations").

For pairs of statements that differ only in the subject (one true, one false; `pairs`), in the
few-shot prompt "<4 examples> <statement> This statement is:", the metric is
LD = logit(" TRUE") − logit(" FALSE") at the last position (log-prob difference, the same number). For every
token t from the first subject token to the end and every layer l, the true run's block output
(resid_post.l) at t is written into the false run; ΔLD(t, l) = LD_patched − LD_false. Tokens before the
subject are identical in both runs, and the last block's output at a non-final token feeds nothing, so those
cells are 0 without a forward.

Four directions: base→base, post→post (within-model maps) and base→post, post→base (cross-model: the
source model's true-run activations into the receiving model's false run). A pair counts for a receiving
model when it separates the pair (LD_true − LD_false > min_gap); comparisons use pairs both models separate.
Maps are averaged over pairs by position class (subject first/middle/last, object, ..., then each suffix
token) and normalized by the receiving model's mean gap, so 1 = the full true-vs-false difference.
"""

from posttrain_probe.probes.base import Probe, lazy_exports

PROBE = Probe(
    name="patching",
    analysis="truth_patching",
    title="True/false and cross-model patching",
    question="Does the post-trained model read truth from the same places, and do activations transfer across models?",
    explanation=(
        "Each map is the normalised change of logit(TRUE)−logit(FALSE) when the true run's residual at (token, "
        "layer) is patched into the false run. Cross-model patching moves activations between base and post."
    ),
    figures="posttrain_probe.probes.patching.figures",
    verdicts="posttrain_probe.probes.patching.verdicts:verdicts",
    command="patch",
    help="true/false patching within and across models (Du et al. 2025)",
    config="posttrain_probe.probes.patching.config:PatchingConfig",
    data="posttrain_probe.probes.patching.config:PatchingData",
    load_inputs="posttrain_probe.probes.patching.run:load_inputs",
    run="posttrain_probe.probes.patching.run:run",
    summarize="posttrain_probe.probes.patching.run:format_summary",
    workload={
        "smoke": {"max_pairs": 6, "n_boot": 50},
        "quick": {"max_pairs": 40},
        "toy": {"max_pairs": 200},
        "real": {"max_pairs": 200},
    },
)

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PatchingConfig": "config",
        "PatchingData": "config",
        "PatchingInputs": "run",
        "load_inputs": "run",
        "run_patching": "run",
        "patch_maps": "run",
        "label_token_ids": "run",
        "format_summary": "run",
        "DIRECTIONS": "result",
        "assemble_result": "result",
        "direction_name": "result",
    },
)
__all__ = ["PROBE", *sorted(__dir__())]
