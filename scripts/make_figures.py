"""Regenerate the README's figures from saved run directories only (a default demo's output folder):

    python scripts/make_figures.py runs/demo --out figures/

The same as `posttrain-probe figures RESULTS_DIR --out DIR --only ...` with the README's selection below (see
posttrain_probe/plots/export.py); pass your own `--only PATTERN...` to pick others, `--only '*'` for all.
"""

from __future__ import annotations

import sys

from posttrain_probe.cli import main

README_FIGURES = [
    "rlvr_dynamics__curves",
    "rlvr_dynamics__entropy_law",
    "rlvr_dynamics__predicted_vs_realized",
    "checkpoint_drift__drift_vs_entropy",
    "causal_tracing__triptych_resid",
    "truth__truth_accuracy_by_layer",
    "refusal__refusal_rates",
    "neurons__neurons_explained_share",
]

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--only" not in args:
        args += ["--only", *README_FIGURES]
    raise SystemExit(main(["figures", *args]))
