"""Entropy (confidence-regulation) neurons in a base model and its post-trained twin (SPEC §3; Stolfo et al.
2024, Du et al. 2025), and weight screens along a checkpoint series (`series`).

What `run_neurons` (in `run`) computes, per model, on byte-identical token ids:
- weight screens of every neuron of the ablation layer (default: the last MLP; optionally every layer):
  ‖w_out‖, LogitVar and the null-space fraction ρ (see `screen` for the folded unembedding);
- two selections on the ablation layer: Du et al.'s rule (top `top_frac` by norm, then the `n_select` lowest
  LogitVar) and the `n_null` neurons with the largest ρ;
- mean ablation (means over `n_ref` reference texts) of every selected neuron alone and of each selected set,
  on `n_eval` other texts: change of next-token entropy and loss, total and direct (final norm's scale frozen
  at its clean value); controls: `n_controls` random neurons of the same norm decile per selected neuron, and
  `n_control_sets` random sets of the same size drawn decile by decile; `all_neurons` ablates every neuron;
- base vs post: IoU of the selections, neuron matching by cosine of the write vectors, and the share of the
  base→post entropy gap G = H_post − H_base explained by ablating the sets:
  share_both = 1 − G_ablated / G (each model ablated with its own set), share_post = −ΔH_post / G,
  share_base = ΔH_base / G; the same numbers for the control sets.

Choices the SPEC leaves open: the null-space size k defaults to 40 for d_model ≥ 400, else ⌈0.1·d_model⌉;
evaluation texts are raw text for both models (no chat template); ablation covers every position; effects
are token-weighted means over the evaluation texts with per-text (cluster) standard errors.
"""

from posttrain_probe.probes.base import Probe, lazy_exports

PROBE = Probe(
    name="neurons",
    analysis="neurons",
    title="Entropy neurons",
    question="Do entropy (confidence-regulation) neurons explain the confidence difference between base and post?",
    explanation=(
        "Norm vs LogitVar of last-layer neurons (selection marked); total vs direct effects of mean ablation "
        "against random neurons of matched norm."
    ),
    figures="posttrain_probe.probes.neurons.figures",
    verdicts="posttrain_probe.probes.neurons.verdicts:verdicts",
    command="neurons",
    help="entropy neurons: weight screens, mean ablation (total/direct), base vs post",
    config="posttrain_probe.probes.neurons.config:NeuronsConfig",
    data="posttrain_probe.probes.neurons.config:NeuronsData",
    load_inputs="posttrain_probe.probes.neurons.run:load_inputs",
    run="posttrain_probe.probes.neurons.run:run",
    summarize="posttrain_probe.probes.neurons.run:format_summary",
    backend="bridge",
    workload={
        "smoke": {"n_ref": 16, "n_eval": 8, "max_tokens": 32, "n_controls": 1, "n_control_sets": 2, "batch_rows": 32},
        "quick": {"n_ref": 64, "n_eval": 32, "n_control_sets": 3},
        "toy": {"n_ref": 256, "n_eval": 64, "n_control_sets": 10},
        "real": {"n_ref": 256, "n_eval": 128, "max_tokens": 128, "batch_rows": 64},
    },
)

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "NeuronsConfig": "config",
        "NeuronsData": "config",
        "SCREEN_LAYERS": "config",
        "NeuronsInputs": "run",
        "load_inputs": "run",
        "run_neurons": "run",
        "load_texts": "run",
        "split_texts": "run",
        "encode_texts": "run",
        "format_summary": "run",
        "ANALYSIS": "run",
        "explained_share": "tables",
        "screen_checkpoints": "series",
        "selection_overlap": "series",
    },
)
__all__ = ["PROBE", *sorted(__dir__())]
