"""Why a refusal direction does or does not work: checks that separate "the method failed" from "this model
does not refuse through one direction at the post-instruction tokens".

Arditi et al.'s method assumes refusal is mediated by one residual direction that the post-instruction tokens
carry. A model can refuse perfectly without that: e.g. its last blocks read the harmful word from the
instruction tokens and write the refusal straight into the last position. Then ablating any single direction
leaves refusal intact and a null bypass says nothing about the implementation. Per model (`diagnose`):

- `locus`: matched-length harmful/harmless prompt pairs; the full residual of the harmful prompt is patched into
  the harmless one at resid[l] (l = 0..L), either at every instruction position (the template prefix is the
  same in both, so this is the instruction's content) or at every post-instruction position. Value = share of
  the refusal-score gap that comes back, (mean patched − mean harmless) / (mean harmful − mean harmless); the
  post-instruction share at resid[L] is 1 by construction. Where refusal lives at the post-instruction tokens
  early, a direction there can mediate it; where the instruction positions carry it up to the last blocks,
  none can;
- `bypass_score_all_candidates`: the validation harmful refusal score with the whole span of the model's
  non-zero candidates ablated at every layer and position (resid pre/mid/post), not just the selected one;
- `induce_score_by_scale`: the validation harmless refusal score with c·r added at resid_pre[l], all
  positions, for several coefficients c, for the selected candidate and for the layer-eligible candidate with
  the highest induce score (Arditi et al. use c = 1).

Scores are the generation-free log-odds of refusal-start tokens (> 0: a refusal start is more likely than not).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from posttrain_probe.pair import Edit, HookedModel, Patch
from posttrain_probe.probes.refusal.core import refusal_log_odds
from posttrain_probe.probes.refusal.model import Prompts, last_logits

LOCUS_CHUNK = 8  # pairs per forward: the harmful run reads every resid site
MIN_GAP = 1.0  # log-odds: below this the model does not tell harmful from harmless, and shares mean nothing


def _real(p: Prompts, i: int) -> torch.Tensor:
    """Row i of left-padded prompts without its padding."""
    return p.input_ids[i][p.attention_mask[i].bool()]


def length_matched_pairs(harmful: Prompts, harmless: Prompts, max_pairs: int) -> list[tuple[int, int]]:
    """(harmful row, harmless row) pairs with the same number of real tokens, round-robin over the lengths."""
    by_len: dict[int, tuple[list[int], list[int]]] = {}
    for k, p in enumerate((harmful, harmless)):
        for i, n in enumerate(p.attention_mask.sum(1).tolist()):
            by_len.setdefault(int(n), ([], []))[k].append(i)
    groups = [list(zip(h, hl)) for _, (h, hl) in sorted(by_len.items())]
    out: list[tuple[int, int]] = []
    j = 0
    while len(out) < max_pairs and any(j < len(g) for g in groups):
        out += [g[j] for g in groups if j < len(g)]
        j += 1
    return out[:max_pairs]


def _resid_sites(n_layers: int) -> list[str]:
    return [f"resid_pre.{l}" for l in range(n_layers)] + [f"resid_post.{n_layers - 1}"]


@torch.no_grad()
def refusal_locus(
    model: HookedModel,
    harmful: Prompts,
    harmless: Prompts,
    n_post: int,
    score_ids: Sequence[int],
    max_pairs: int = 32,
    min_gap: float = MIN_GAP,
) -> dict:
    """The `locus` check of the module docstring: {n_pairs, gap, instruction: [L+1], post_instruction: [L+1]}
    (shares NaN when there is no pair or the refusal-score gap is below `min_gap`)."""
    L = model.n_layers
    sites = _resid_sites(L)
    pairs = length_matched_pairs(harmful, harmless, max_pairs)
    nan = [float("nan")] * (L + 1)
    out = {"n_pairs": len(pairs), "gap": float("nan"), "instruction": nan, "post_instruction": nan}
    if not pairs:
        return out
    s_h, s_hl = [], []
    patched = {k: [[] for _ in sites] for k in ("instruction", "post_instruction")}
    lengths = sorted({int(harmful.attention_mask[i].sum()) for i, _ in pairs})
    for n in lengths:  # one length at a time: no padding, so positions are shared by every row
        group = [p for p in pairs if int(harmful.attention_mask[p[0]].sum()) == n]
        cells = {"instruction": list(range(n - n_post)), "post_instruction": list(range(n - n_post, n))}
        for c in range(0, len(group), LOCUS_CHUNK):
            chunk = group[c : c + LOCUS_CHUNK]
            ih = torch.stack([_real(harmful, i) for i, _ in chunk])
            ihl = torch.stack([_real(harmless, j) for _, j in chunk])
            run_h = model.run(ih, read=sites)
            s_h.append(refusal_log_odds(run_h.logits[:, -1], score_ids).cpu())
            s_hl.append(refusal_log_odds(model.run(ihl).logits[:, -1], score_ids).cpu())
            for where, pos in cells.items():
                if not pos:
                    for j in range(len(sites)):
                        patched[where][j].append(s_hl[-1])
                    continue
                for j, s in enumerate(sites):
                    iv = Patch(s, positions=pos, value=run_h.cache[s][:, pos])
                    got = model.run(ihl, interventions=[iv]).logits[:, -1]
                    patched[where][j].append(refusal_log_odds(got, score_ids).cpu())
    mh, mhl = float(torch.cat(s_h).mean()), float(torch.cat(s_hl).mean())
    out["gap"] = mh - mhl
    if not out["gap"] >= min_gap:
        return out
    for where, per_site in patched.items():
        out[where] = [(float(torch.cat(v).mean()) - mhl) / (mh - mhl) for v in per_site]
    return out


def subspace_ablation(vectors: torch.Tensor, n_layers: int) -> list[Edit]:
    """x ← x − Q Qᵀ x for the span Q of `vectors` (k, D) at resid_pre/mid/post of every layer, every position."""
    v = vectors.double()
    v = v[v.norm(dim=-1) > 0]
    if not len(v):
        raise ValueError("no non-zero vectors to ablate")
    q, r = torch.linalg.qr(v.T)  # (D, k)
    keep = r.diagonal().abs() > 1e-8 * r.diagonal().abs().max()
    q = q[:, keep].float()

    def fn(x: torch.Tensor) -> torch.Tensor:
        qq = q.to(x.device)
        xf = x.float()
        return (xf - (xf @ qq) @ qq.T).to(x.dtype)

    return [Edit(f"{k}.{l}", fn=fn) for l in range(n_layers) for k in ("resid_pre", "resid_mid", "resid_post")]


def _addition(vec: torch.Tensor, layer: int, scale: float) -> list[Edit]:
    v = vec.float() * scale

    def fn(x: torch.Tensor) -> torch.Tensor:
        return (x.float() + v.to(x.device)).to(x.dtype)

    return [Edit(f"resid_pre.{layer}", fn=fn)]


@torch.no_grad()
def diagnose(
    st,
    table: pd.DataFrame,
    harmful_train: Prompts,
    harmless_train: Prompts,
    scales: Sequence[float],
    batch_size: int,
    max_pairs: int = 32,
) -> dict:
    """Every check of the module docstring for one model (`st`: its `ModelState`; `table`: its scored
    candidate table after selection)."""
    m, L = st.model, st.model.n_layers
    P = st.candidates.shape[1]
    hv, hlv = st.val_harmful, st.val_harmless
    locus = refusal_locus(m, harmful_train, harmless_train, P, st.score_ids, max_pairs)
    flat = st.candidates.reshape(L * P, -1)
    nonzero = flat[flat.norm(dim=-1) > 0]
    bypass_all = float("nan")
    if len(nonzero):
        ablate = subspace_ablation(nonzero, L)
        lg = last_logits(m, hv.input_ids, hv.attention_mask, batch_size, lambda sl, ivs=ablate: ivs)
        bypass_all = float(refusal_log_odds(lg, st.score_ids).mean())
    eligible = table[table.passes_layer] if table.passes_layer.any() else table
    best = eligible.loc[eligible.induce_score.idxmax()]
    sel = table[table.selected].iloc[0]
    sweeps = {}
    for name, row in (("selected", sel), ("best_induce", best)):
        l, p = int(row.layer), int(row.position)
        vec = st.candidates[l, p]
        scores = {}
        for c in scales:
            add = _addition(vec, l, c)
            lg = last_logits(m, hlv.input_ids, hlv.attention_mask, batch_size, lambda sl, ivs=add: ivs)
            scores[f"{c:g}"] = float(refusal_log_odds(lg, st.score_ids).mean())
        sweeps[name] = {"layer": l, "position": p, "induce_score": scores}
    return {
        "locus": locus,
        "n_candidates": int(len(nonzero)),
        "bypass_score_all_candidates": bypass_all,
        "addition_sweep": sweeps,
    }


def locus_table(role: str, locus: dict) -> pd.DataFrame:
    rows = [
        dict(model=role, cells=where, layer=l, share=v, n_pairs=locus["n_pairs"], gap=locus["gap"])
        for where in ("instruction", "post_instruction")
        for l, v in enumerate(locus[where])
    ]
    return pd.DataFrame(rows)


def _fmt(xs: Sequence[float]) -> str:
    return "/".join(f"{x:.2f}" for x in xs)


def locus_summary(diag: dict) -> str:
    """One sentence on where the refusal decision lives, from the `locus` check ("" when it has no signal)."""
    loc = diag["locus"]
    inst, post = loc["instruction"], loc["post_instruction"]
    if not loc.get("n_pairs") or np.isnan(loc["gap"]) or loc["gap"] < MIN_GAP or np.isnan(inst[0]):
        return ""
    L = len(inst) - 1
    out = (
        f"Patching harmful residuals into {loc['n_pairs']} length-matched harmless prompts restores, at "
        f"resid[0..{L - 1}], {_fmt(inst[:L])} of the refusal-score gap ({loc['gap']:.1f} log-odds) from the "
        f"instruction positions and {_fmt(post[:L])} from the post-instruction positions"
    )
    if inst[L - 1] > post[L - 1]:
        out += (
            "; at the input of the last block the instruction still carries more of the decision than the "
            "post-instruction tokens, so the last block reads it from the instruction itself"
        )
    return out + "."


def diagnosis_note(role: str, diag: dict, baseline: dict, rates: dict, add_scale: float = 1.0) -> str | None:
    """A note for a model that refuses but whose own direction does not bypass refusal when ablated (≥ half of
    the refusal rate stays) or does not induce it when added, with the diagnostics as evidence; None otherwise."""
    base_rate = rates.get("harmful.baseline", {}).get(role, float("nan"))
    abl = rates.get("harmful.ablation", {}).get(f"{role}->{role}", float("nan"))
    add = rates.get("harmless.addition", {}).get(f"{role}->{role}", float("nan"))
    if not base_rate >= 0.5 or (abl < 0.5 * base_rate and add >= 0.5):
        return None
    h = baseline.get("val_harmful_refusal_score", float("nan"))
    hl = baseline.get("val_harmless_refusal_score", float("nan"))
    all_c = diag["bypass_score_all_candidates"]
    lines = [
        f"{role}: its own direction leaves refusal at {abl:.2f} when ablated (baseline {base_rate:.2f}) and "
        f"induces {add:.2f} when added (c = {add_scale:g})."
    ]
    if all_c == all_c:
        lines.append(
            f"Ablating the span of all {diag['n_candidates']} non-zero candidates at every layer and position "
            f"moves the validation harmful refusal score from {h:.2f} to {all_c:.2f}"
            + (
                " (> 0: still refusing), so no candidate direction, nor any combination of them, mediates refusal "
                "in this model."
                if all_c > 0
                else "."
            )
        )
    where = locus_summary(diag)
    if where:
        lines.append(where)
    for name, sw in diag["addition_sweep"].items():
        lines.append(
            f"Adding c·r of the {name.replace('_', ' ')} candidate (layer {sw['layer']}, position "
            f"{sw['position']}) gives harmless refusal scores (baseline {hl:.2f}, > 0: refusal more likely) "
            + ", ".join(f"c={c}: {v:.2f}" for c, v in sw["induce_score"].items())
            + "."
        )
    return " ".join(lines)


__all__ = [
    "diagnose",
    "diagnosis_note",
    "length_matched_pairs",
    "locus_summary",
    "locus_table",
    "refusal_locus",
    "subspace_ablation",
]
