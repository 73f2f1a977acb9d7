"""Verdicts of causal tracing, from a saved result only.

"Facts stay where they were stored" (Du et al. 2025) is judged on the per-fact-cell Pearson correlation of the
base and post AIE maps (every (token ≥ subject start, layer) cell of every fact both models know; the lowest
over the traced kinds), with a 95% bootstrap interval over facts. The claim names a storage site, so it also
needs the ROME signature, an effect at the last subject token, in both models; without it the correlation is
carried by the last-token row (the answer being read out), and the verdict is inconclusive.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from posttrain_probe.results import RunResult
from posttrain_probe.verdict import Interval, Verdict, bootstrap_ci, decide, fmt_ci, moments, pooled_pearson

PAPER = "Du et al. 2025"
CLAIM = "post-training does not move where facts are stored (causal tracing maps agree)"
THRESHOLD = 0.8  # per-fact-cell Pearson of base and post maps
SIGNATURE_MIN_AIE = 0.01  # an effect at the last subject token: mean AIE (answer probability) above this
SIGNATURE_KINDS = ("mlp", "resid")
N_BOOT = 1000


def _facts(res: RunResult) -> Any:
    return res.tables["facts"].set_index("index")


def _rows(res: RunResult, role: str) -> dict[int, int]:
    """fact index → row of the role's `ie` tensors."""
    return {int(fi): j for j, fi in enumerate(res.tensors[f"fact_index.{role}"].tolist())}


def cell_moments(res: RunResult, kind: str, common: list[int]) -> np.ndarray:
    """Per common fact the sufficient statistics of its (t ≥ subject start, l) cells finite in both maps:
    (F, 6) columns n, Σx, Σy, Σx², Σy², Σxy with x = base AIE, y = post AIE."""
    facts, rows = _facts(res), {r: _rows(res, r) for r in ("base", "post")}
    out = np.zeros((len(common), 6))
    for i, fi in enumerate(common):
        s0, n = int(facts.loc[fi, "subject_start"]), int(facts.loc[fi, "n_tokens"])
        x = res.tensors[f"ie.base.{kind}"][rows["base"][fi], s0:n].double().numpy()
        out[i] = moments(x, res.tensors[f"ie.post.{kind}"][rows["post"][fi], s0:n].double().numpy())
    return out


def last_subject_aie(res: RunResult, role: str, kinds: list[str]) -> np.ndarray:
    """(F, K·L) per-fact AIE at the last subject token, for the role's own known facts and `kinds`."""
    facts, rows = _facts(res), _rows(res, role)
    cols = []
    for fi, j in sorted(rows.items()):
        end = int(facts.loc[fi, "subject_end"])
        cols.append(np.concatenate([res.tensors[f"ie.{role}.{k}"][j, end - 1].double().numpy() for k in kinds]))
    return np.stack(cols) if cols else np.zeros((0, 1))


def signature(res: RunResult, role: str, seed: int) -> Interval:
    """The ROME signature of one model: the largest mean AIE at the last subject token over layers and the
    kinds in SIGNATURE_KINDS, with a 95% bootstrap interval over its known facts."""
    kinds = [k for k in SIGNATURE_KINDS if f"ie.{role}.{k}" in res.tensors]
    if not kinds:
        return math.nan, None, None
    per = last_subject_aie(res, role, kinds)

    def stat(idx: np.ndarray) -> float:
        m = np.nanmean(per[idx], axis=0) if len(idx) else np.array([math.nan])
        return float(np.nanmax(m)) if np.isfinite(m).any() else math.nan

    return bootstrap_ci(stat, len(per), N_BOOT, seed)


def _class_map_without_last(s: dict[str, Any], kind: str) -> float:
    """Pearson of the common class maps without the last-token row (what the class-map number owes to it)."""
    maps = s.get("aie", {}).get("common", {})
    try:
        a = np.asarray(maps["base"][kind], dtype=float)[:-1].ravel()
        b = np.asarray(maps["post"][kind], dtype=float)[:-1].ravel()
    except (KeyError, IndexError):
        return math.nan
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return math.nan
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def verdicts(res: RunResult) -> list[Verdict]:
    s = res.summary
    rule = (
        f"95% bootstrap CI over facts known by both models of the per-fact-cell Pearson of the base and post AIE "
        f"maps (lowest over kinds) entirely above {THRESHOLD}; needs the ROME signature (last-subject-token AIE "
        f"with its CI above {SIGNATURE_MIN_AIE}) in both models"
    )
    kinds = [k for k in s.get("kinds", []) if f"ie.base.{k}" in res.tensors and f"ie.post.{k}" in res.tensors]
    facts = res.tables.get("facts")
    if facts is None or not kinds:
        return [decide(PAPER, CLAIM, (math.nan, None, None), 0, THRESHOLD, rule, "no per-fact maps", "tracing")]
    common = sorted(int(i) for i in facts[facts.known_base & facts.known_post]["index"])
    moments = {k: cell_moments(res, k, common) for k in kinds}

    def stat(idx: np.ndarray) -> float:
        return min(pooled_pearson(moments[k], idx) for k in kinds)

    iv = bootstrap_ci(stat, len(common), N_BOOT, int(res.config.get("seed", 0) or 0))
    sig = {r: signature(res, r, 7 + i) for i, r in enumerate(("base", "post"))}
    corr = s.get("pearson_base_post", {})
    evidence = (
        f"per-fact-cell Pearson of base and post AIE maps over {len(common)} facts known by both: "
        + ", ".join(f"{k} {pooled_pearson(moments[k], np.arange(len(common))):.2f}" for k in kinds)
        + f" (lowest {fmt_ci(iv)}); class-map Pearson "
        + ", ".join(f"{k} {corr.get(k, {}).get('class_map', math.nan):.2f}" for k in kinds)
        + ", without the last-token row "
        + ", ".join(f"{k} {_class_map_without_last(s, k):.2f}" for k in kinds)
        + "; ROME signature (max last-subject-token AIE over layers, "
        + "/".join(k for k in SIGNATURE_KINDS if k in kinds)
        + "): "
        + ", ".join(f"{r} {fmt_ci(v, '.3f')}" for r, v in sig.items())
    )
    missing = [r for r, (_, lo, _) in sig.items() if lo is None or not lo > SIGNATURE_MIN_AIE]
    guard = None
    if len(common) < 5:
        guard = f"only {len(common)} facts are known by both models"
    elif missing:
        guard = (
            f"the ROME signature (an effect at the last subject token above {SIGNATURE_MIN_AIE}) is absent in "
            f"{' and '.join(missing)}: without a storage site the maps' agreement says where the answer is read "
            "out, not where the fact is stored"
        )
    return [decide(PAPER, CLAIM, iv, len(common), THRESHOLD, rule, evidence, "tracing", guard=guard)]
