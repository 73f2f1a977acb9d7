"""Registry entries of the analyses across RLVR steps and checkpoints (names only; nothing heavy is imported)."""

from posttrain_probe.probes.base import Analysis

DYNAMICS = Analysis(
    name="dynamics",
    analysis="rlvr_dynamics",
    title="RLVR entropy dynamics",
    question="Why does policy entropy collapse during RL, and what do covariance-based interventions change?",
    explanation=(
        "Entropy and accuracy per step for every intervention; R against H with the fitted law R = −a·e^H + b; "
        "predicted vs realized entropy change; realized ΔH per (probability, advantage) quadrant."
    ),
    figures="posttrain_probe.plots.dynamics",
    verdicts="posttrain_probe.analysis.verdicts:dynamics_verdicts",
)

DRIFT = Analysis(
    name="drift",
    analysis="checkpoint_drift",
    title="Internal change along the RL run",
    question="What changed inside the model along the RL run?",
    explanation=(
        "Relative weight change per module, CKA to the start per layer, truth/refusal direction drift, the change "
        "of the causal-tracing map, entropy-neuron screens and ablation effects, lined up against the run's entropy "
        "curve."
    ),
    figures="posttrain_probe.plots.drift",
)
