"""Regenerate the README's figures from saved run directories only: a default demo's output folder and, with
`--study`, a paired RLVR study's (its figures are written with the prefix `rlvr_study__`):

    python scripts/make_figures.py runs/demo --study runs/rlvr_study --out figures/

The same as `posttrain-probe figures RESULTS_DIR --out DIR --only ...` with the README's selection below (see
posttrain_probe/plots/export.py); pass your own `--only PATTERN...` to pick others, `--only '*'` for all.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

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
STUDY_FIGURES = ["rlvr_dynamics__curves", "rlvr_dynamics__paired", "rlvr_dynamics__dose_*"]
STUDY_PREFIX = "rlvr_study__"


def study_figures(study: str, out: str) -> int:
    """Draw the study's README figures into `out` as rlvr_study__<name>.png."""
    with tempfile.TemporaryDirectory() as tmp:
        code = main(["figures", study, "--out", tmp, "--only", *STUDY_FIGURES])
        if code:
            return code
        Path(out).mkdir(parents=True, exist_ok=True)
        for path in sorted(Path(tmp).glob("*.png")):
            name = STUDY_PREFIX + path.name.removeprefix("rlvr_dynamics__")
            shutil.copyfile(path, Path(out) / name)
            print(Path(out) / name)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    study = None
    if "--study" in args:
        i = args.index("--study")
        study = args[i + 1] if i + 1 < len(args) else None
        if study is None:
            raise SystemExit("error: --study needs a folder (the --out of `posttrain-probe rlvr study`)")
        del args[i : i + 2]
    if "--only" not in args:
        args += ["--only", *README_FIGURES]
    code = main(["figures", *args])
    if study is not None and code == 0:
        out = args[args.index("--out") + 1] if "--out" in args else "figures"
        code = study_figures(study, out)
    raise SystemExit(code)
