"""Verdicts of the truth-direction probe, from a saved result only.

"A shared linear truth direction" is judged on the mass-mean cosine of base and post at the probe layer, with a
95% bootstrap interval over training statements (the mass-mean directions are refitted per resample from the
stored activations). It also needs the direction to be a truth probe in both models (held-out accuracy CI above
ACC_MIN) and to transfer (each model's probe on the other model's activations, CI above TRANSFER_MIN); the
logistic family (cosine, own and cross-model accuracy) is reported beside it. Accuracies are bootstrapped over
held-out statements from the run's `probe_predictions` table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from posttrain_probe.probes.truth.fit import nie_summary
from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Interval, Verdict, bootstrap_ci, decide, fmt_ci

PAPER = "Du et al. 2025"
CLAIM_SHARED = "a linear truth direction exists and is highly similar in base and post"
CLAIM_NIE = "the truth direction transfers between models for interventions"
COS_THRESHOLD = 0.8
ACC_MIN = 0.8  # held-out accuracy of each model's own probe
TRANSFER_MIN = 0.7  # held-out accuracy of a model's probe on the other model's activations
NIE_RATIO_THRESHOLD = 0.7
OWN_NIE_MIN = 0.05
N_BOOT = 1000
NAN_IV: Interval = (math.nan, None, None)


def _seed(res: RunResult) -> int:
    return int(res.config.get("seed", 0) or 0)


def mass_mean_cosine(res: RunResult, layer: int) -> tuple[Interval, int]:
    """Cosine of base's and post's mass-mean directions at `layer`, refitted on bootstrap resamples of the
    training statements (stored activations); (estimate, lo, hi) and the number of training statements."""
    st = res.tables.get("statements")
    if st is None or any(f"activations.{r}" not in res.tensors for r in ("base", "post")):
        return NAN_IV, 0
    train = np.flatnonzero((st["split"] == "train").to_numpy())
    y = st["label"].to_numpy()[train].astype(float)
    X = {r: res.tensors[f"activations.{r}"][train, layer].double().numpy() for r in ("base", "post")}

    def stat(idx: np.ndarray) -> float:
        w = np.bincount(idx, minlength=len(train)).astype(float)
        wt, wf = w * y, w * (1 - y)
        if wt.sum() == 0 or wf.sum() == 0:
            return math.nan
        d = {r: wt @ x / wt.sum() - wf @ x / wf.sum() for r, x in X.items()}
        den = np.linalg.norm(d["base"]) * np.linalg.norm(d["post"])
        return float(d["base"] @ d["post"] / den) if den > 0 else math.nan

    return bootstrap_ci(stat, len(train), N_BOOT, _seed(res)), len(train)


def accuracies(res: RunResult, kind: str, cross: bool, seed: int) -> tuple[Interval, int]:
    """The lower of the two held-out accuracies of `kind` probes, own (a model's probe on its activations) or
    cross-model (on the other model's), with a 95% bootstrap interval over held-out statements (paired)."""
    t = res.tables.get("probe_predictions")
    if t is None or t.empty:
        return NAN_IV, 0
    t = t[(t.probe == kind) & ((t.direction_from != t.applied_to) if cross else (t.direction_from == t.applied_to))]
    wide = t.pivot_table(index="statement", columns="direction_from", values="correct", aggfunc="first")
    m = wide.to_numpy(dtype=float)  # (N, 2)
    return bootstrap_ci(lambda idx: float(np.nanmean(m[idx], axis=0).min()), len(m), N_BOOT, seed), len(m)


def _family(res: RunResult, kind: str, layer: int) -> dict[str, Any]:
    cos = res.summary.get("cosine_at_probe_layer", {}).get(kind, math.nan)
    own, n_test = accuracies(res, kind, False, _seed(res) + 1)
    xacc, _ = accuracies(res, kind, True, _seed(res) + 2)
    return {"cos": cos, "own": own, "cross": xacc, "n_test": n_test}


def _family_text(name: str, f: dict[str, Any]) -> str:
    return (
        f"{name}: cosine {f['cos']:.3f}, own held-out accuracy (lower of the two models) {fmt_ci(f['own'])}, "
        f"cross-model accuracy (lower of base→post, post→base) {fmt_ci(f['cross'])}"
    )


def _fewshot_by_dataset(res: RunResult) -> str:
    """Few-shot TRUE/FALSE accuracy per dataset of the intervened statements (to compare with patching's)."""
    t = res.tables.get("intervention_pd")
    if t is None or t.empty:
        return ""
    clean = t.drop_duplicates(["statement", "applied_to"])
    parts = [
        f"{role} "
        + ", ".join(f"{ds} {float(((g.pd > 0).astype(int) == g.label).mean()):.2f}" for ds, g in sub.groupby("dataset"))
        for role, sub in clean.groupby("applied_to")
    ]
    return (
        "; few-shot TRUE/FALSE accuracy per dataset (sign of P(TRUE) − P(FALSE), per-dataset shots): "
        + "; ".join(parts)
        + " (the patching section judges only its subject-paired statements after one fixed set of shots, so its "
        "accuracy can differ)"
    )


def shared_direction_verdict(res: RunResult) -> Verdict:
    s = res.summary
    lp = int(s.get("probe_layer", 0))
    iv, n_train = mass_mean_cosine(res, lp)
    fam = {k: _family(res, k, lp) for k in ("mass_mean", "logistic")}
    rule = (
        f"95% bootstrap CI over {n_train} training statements of the mass-mean cosine(base, post) at the probe "
        f"layer entirely above {COS_THRESHOLD}; needs each model's own mass-mean held-out accuracy CI above "
        f"{ACC_MIN} and its cross-model accuracy CI above {TRANSFER_MIN} (bootstrap over held-out statements)"
    )
    transfers = {k: f["cross"][1] is not None and f["cross"][1] > TRANSFER_MIN for k, f in fam.items()}
    evidence = (
        f"at layer {lp}: "
        + "; ".join(_family_text(k, f) for k, f in fam.items())
        + f"; mass-mean cosine {fmt_ci(iv, '.3f')}; families that transfer across models: "
        + (", ".join(k for k, ok in transfers.items() if ok) or "none")
        + _fewshot_by_dataset(res)
    )
    mm = fam["mass_mean"]
    guard = None
    if not (mm["own"][1] is not None and mm["own"][1] > ACC_MIN):
        guard = (
            f"the mass-mean probe is not a reliable truth probe in both models (own accuracy CI not above {ACC_MIN})"
        )
    elif not transfers["mass_mean"]:
        guard = (
            "the mass-mean probe of one model does not read truth from the other model's activations "
            f"(cross-model accuracy CI not above {TRANSFER_MIN}), so a high cosine does not make the direction shared"
        )
    return decide(PAPER, CLAIM_SHARED, iv, n_train, COS_THRESHOLD, rule, evidence, "truth", guard=guard)


def nie_interval(res: RunResult, seed: int) -> tuple[Interval, Interval, int]:
    """(NIE base→post / NIE post→post, NIE post→post, n statements), bootstrap over the intervened statements
    (NIE on group means, as the run computes it)."""
    t = res.tables.get("intervention_pd")
    if t is None or t.empty:
        return NAN_IV, NAN_IV, 0
    t = t[t.applied_to == "post"]
    wide = {
        src: g.set_index("statement").sort_index() for src, g in t.groupby("direction_from") if src in ("base", "post")
    }
    if set(wide) != {"base", "post"}:
        return NAN_IV, NAN_IV, 0
    label = wide["post"].label.to_numpy()
    cols = {src: (g.pd.to_numpy(), g.pd_int.to_numpy()) for src, g in wide.items()}

    def nie(src: str, idx: np.ndarray) -> float:
        pd_, pdi = cols[src][0][idx], cols[src][1][idx]
        tr, fa = label[idx] == 1, label[idx] == 0
        if not tr.any() or not fa.any():
            return math.nan
        return nie_summary(pd_[tr], pdi[tr], pd_[fa], pdi[fa])["nie_mean"]

    def ratio(idx: np.ndarray) -> float:
        own = nie("post", idx)
        return nie("base", idx) / own if own else math.nan

    n = len(label)
    return (
        bootstrap_ci(ratio, n, N_BOOT, seed),
        bootstrap_ci(lambda idx: nie("post", idx), n, N_BOOT, seed),
        n,
    )


def nie_verdict(res: RunResult) -> Verdict:
    s = res.summary
    nie = s.get("nie", {})
    ratio, own, n = nie_interval(res, _seed(res) + 3)
    rule = (
        f"95% bootstrap CI over {n} intervened statements of NIE(base→post) / NIE(post→post) entirely above "
        f"{NIE_RATIO_THRESHOLD}; needs post's own NIE CI above {OWN_NIE_MIN}"
    )
    evidence = f"NIE ratio base→post / post→post {fmt_ci(ratio)}; post→post {fmt_ci(own, '.3f')}; " + ", ".join(
        f"{k} {v:.3f}" for k, v in nie.items()
    )
    guard = None
    if not (own[1] is not None and own[1] > OWN_NIE_MIN):
        guard = (
            f"the post model does not respond to its own direction (NIE CI not above {OWN_NIE_MIN}), so transfer "
            "cannot be judged" + _truth_reach_evidence(s.get("intervention_reach", {}))
        )
    return decide(PAPER, CLAIM_NIE, ratio, n, NIE_RATIO_THRESHOLD, rule, evidence, "truth", guard=guard)


def verdicts(res: RunResult) -> list[Verdict]:
    out = [shared_direction_verdict(res)]
    if res.summary.get("nie"):
        out.append(nie_verdict(res))
    return out


def _truth_reach_evidence(reach: dict[str, Any]) -> str:
    """Why an NIE ≈ 0 says nothing about the direction, when the run's patching check shows it."""
    shares = {r: d.get("band_cells_share", float("nan")) for r, d in reach.items() if d.get("n_pairs")}
    if not shares or not all(v < 0.1 for v in shares.values()):
        return ""
    d = next(iter(reach.values()))
    band, lps = d["band"], {r: reach[r]["last_position_share"] for r in shares}
    return (
        ". The NIE ≈ 0 is a property of the model, not a failure of the method: patching the full residual of "
        f"true statements into false ones at the intervened cells (last {d['n_last']} statement tokens, "
        f"resid[{band[0]}..{band[-1]}]) restores "
        + ", ".join(f"{r} {abs(v) if abs(v) < 5e-4 else v:.3f}" for r, v in shares.items())
        + " of the P(TRUE) − P(FALSE) gap, while the last position alone restores "
        + "; ".join(f"{r} " + "/".join(f"{x:.2f}" for x in v) for r, v in lps.items())
        + " at resid[0..L]: the answer never reads the cells the method writes, so no direction there can move it"
    )
