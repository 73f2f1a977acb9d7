"""Verdicts of true/false and cross-model patching, from a saved result only.

"Post-training adapts base representations" is judged on the per-pair-cell Pearson of the base→post patched map
and post's own map (every (token ≥ subject start, layer) cell of every pair both models separate), with a 95%
bootstrap interval over pairs. The maps carry signal only when both models judge the statements: each model's
few-shot TRUE/FALSE accuracy on these pairs needs its interval above ACCURACY_MIN, else inconclusive.
"""

from __future__ import annotations

import math

import numpy as np

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Verdict, bootstrap_ci, decide, fmt_ci, moments, pooled_pearson

PAPER = "Du et al. 2025"
CLAIM = "post-training adapts base representations (cross-model patching works)"
THRESHOLD = 0.8
ACCURACY_MIN = 0.6
N_BOOT = 1000


def pair_accuracy(res: RunResult, role: str) -> np.ndarray:
    """Per pair: (true prompt judged TRUE + false prompt judged FALSE) / 2 (the summary's accuracy per pair)."""
    t = res.tensors[f"ld_true.{role}"].double().numpy()
    f = res.tensors[f"ld_false.{role}"].double().numpy()
    return ((t > 0).astype(float) + (f < 0).astype(float)) / 2


def _why_not_truth(res: RunResult) -> str:
    """Why this accuracy may differ from the truth section's few-shot accuracy (different statements/prompts)."""
    pairs = res.tables.get("pairs")
    ds = sorted(set(pairs["dataset"].astype(str))) if pairs is not None and "dataset" in pairs else []
    return (
        "; these are only the statements with a subject/object column that pair into true/false statements "
        f"differing in the subject (dataset {', '.join(ds) or '?'}), all judged after one fixed set of "
        f"{res.config.get('n_shots', '?')} shots from that family and scored by LD = logit(TRUE) − logit(FALSE) "
        "> 0; the truth section's few-shot accuracy pools every truth dataset with per-dataset shots from its "
        "train split, so the two accuracies are over different statements and prompts (see its per-dataset "
        "accuracy)"
    )


def verdicts(res: RunResult) -> list[Verdict]:
    rule = (
        f"95% bootstrap CI over pairs separated by both models of the per-pair-cell Pearson of the base→post "
        f"patched map and post's own map entirely above {THRESHOLD}; needs each model's TRUE/FALSE accuracy on "
        f"the pairs with its CI above {ACCURACY_MIN}"
    )
    need = ("delta.base_to_post", "delta.post", "valid.base", "valid.post", "ld_true.base", "ld_true.post")
    pairs = res.tables.get("pairs")
    if pairs is None or any(k not in res.tensors for k in need):
        return [decide(PAPER, CLAIM, (math.nan, None, None), 0, THRESHOLD, rule, "no cross-model maps", "patching")]
    seed = int(res.config.get("seed", 0) or 0)
    both = (res.tensors["valid.base"] & res.tensors["valid.post"]).numpy().astype(bool)
    sel = np.flatnonzero(both)
    fwd, own = res.tensors["delta.base_to_post"], res.tensors["delta.post"]
    rows = (
        np.stack(
            [
                moments(
                    fwd[i, int(pairs.subject_start.iloc[i]) : int(pairs.n_tokens.iloc[i])].double().numpy(),
                    own[i, int(pairs.subject_start.iloc[i]) : int(pairs.n_tokens.iloc[i])].double().numpy(),
                )
                for i in sel
            ]
        )
        if len(sel)
        else np.zeros((0, 6))
    )
    iv = bootstrap_ci(lambda idx: pooled_pearson(rows, idx), len(sel), N_BOOT, seed)
    acc = {
        r: bootstrap_ci(pair_accuracy(res, r), n_boot=N_BOOT, seed=seed + 1 + i) for i, r in enumerate(("base", "post"))
    }
    comp = res.summary.get("comparisons", {})
    evidence = (
        f"per-pair-cell Pearson of the base→post map vs post's own {fmt_ci(iv)} over {len(sel)} pairs; class-map "
        f"Pearson base→post vs post {comp.get('base_to_post_vs_post', {}).get('pearson', math.nan):.2f}, base vs "
        f"post {comp.get('base_vs_post', {}).get('pearson', math.nan):.2f}; few-shot TRUE/FALSE accuracy on the "
        f"{len(pairs)} pairs " + ", ".join(f"{r} {fmt_ci(a)}" for r, a in acc.items()) + _why_not_truth(res)
    )
    weak = [r for r, (_, lo, _) in acc.items() if lo is None or not lo > ACCURACY_MIN]
    guard = None
    if weak:
        verb = "does" if len(weak) == 1 else "do"
        guard = (
            f"{' and '.join(weak)} {verb} not judge these statements (accuracy CI not above {ACCURACY_MIN}), "
            "so the patched maps carry no true/false signal to compare"
        )
    return [decide(PAPER, CLAIM, iv, len(sel), THRESHOLD, rule, evidence, "patching", guard=guard)]
