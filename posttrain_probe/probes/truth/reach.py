"""Can any edit at the intervened cells move the answer at all? A patching check for the truth intervention.

The NIE of adding δ at the last `n_last` statement tokens over the band measures two things at once: whether
δ is the model's truth direction, and whether the model's answer reads those cells at all. A model can
represent truth linearly at the end of the statement (the probes find it) and still compute its TRUE/FALSE
answer elsewhere, e.g. with the final position attending to the statement's content tokens directly; then no
direction added there can have an effect, and an NIE ≈ 0 says nothing about δ.

`patch_reach` separates the two. For matched pairs of correctly judged true and false few-shot prompts (same
dataset, so the same shots; same token length and statement positions), it copies the *full* residual of the
true prompt into the false prompt and measures the share of the P(TRUE) − P(FALSE) gap that comes back:

- `band_cells_share`: at the intervened cells (the last `n_last` statement tokens at every band layer) — the
  most any substitution of the true state there does. ≈ 0 means the answer does not read these cells;
- `last_position_share[l]`: at the prompt's last position at resid[l], l = 0..L — where the answer is
  assembled; it is 1 at resid[L] by construction (a positive control of the patching itself).

Share = (mean pd_patched − mean pd_false) / (mean pd_true − mean pd_false) over the pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from posttrain_probe.pair import HookedModel, Patch
from posttrain_probe.probes.truth.fit import prob_diff
from posttrain_probe.probes.truth.model import encode_with_spans, layer_sites, site_for_layer

REACH_CHUNK = 8  # pairs per forward: the true run reads every resid site, which is large for real LMs


def matched_pairs(
    labels: Sequence[int],
    groups: Sequence[str],
    pd: Sequence[float],
    lengths: Sequence[int],
    positions: torch.Tensor,
    max_pairs: int,
) -> list[tuple[int, int]]:
    """(true row, false row) pairs of correctly judged prompts (pd > 0 for true, < 0 for false) with the same
    group (dataset: the same few-shot examples), token length and statement positions; seeded by row order
    only (deterministic), at most `max_pairs`, taken round-robin over the buckets so every bucket is used."""
    buckets: dict[tuple, tuple[list[int], list[int]]] = {}
    for i, (y, g, p, n) in enumerate(zip(labels, groups, pd, lengths)):
        if (y == 1 and p > 0) or (y == 0 and p < 0):
            key = (str(g), int(n), tuple(positions[i].tolist()))
            buckets.setdefault(key, ([], []))[0 if y == 1 else 1].append(i)
    per_bucket = [list(zip(t, f)) for _, (t, f) in sorted(buckets.items())]
    out: list[tuple[int, int]] = []
    k = 0
    while len(out) < max_pairs and any(k < len(b) for b in per_bucket):
        out += [b[k] for b in per_bucket if k < len(b)]
        k += 1
    return out[:max_pairs]


def _share(patched: np.ndarray, pd_true: np.ndarray, pd_false: np.ndarray) -> float:
    gap = float(pd_true.mean() - pd_false.mean())
    return float((patched.mean() - pd_false.mean()) / gap) if gap != 0 else float("nan")


@torch.no_grad()
def patch_reach(
    model: HookedModel,
    tokenizer,
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    labels: Sequence[int],
    groups: Sequence[str],
    pd: Sequence[float],
    band: Sequence[int],
    true_id: int,
    false_id: int,
    add_special_tokens: bool = True,
    n_last: int = 2,
    max_pairs: int = 32,
) -> dict:
    """The patching check of the module docstring for one model; `pd` is its clean P(TRUE) − P(FALSE) per
    prompt. Returns n_pairs, band, n_last, band_cells_share, last_position_share (L+1 values) and the clean
    group means; the shares are NaN when no pair could be formed."""
    L = model.n_layers
    ids, mask, pos = encode_with_spans(tokenizer, list(texts), list(spans), n_last, add_special_tokens)
    lengths = mask.sum(1)
    pairs = matched_pairs(list(labels), list(groups), list(pd), lengths.tolist(), pos, max_pairs)
    out = {"n_pairs": len(pairs), "band": [int(b) for b in band], "n_last": n_last}
    if not pairs:
        return out | {"band_cells_share": float("nan"), "last_position_share": [float("nan")] * (L + 1)}
    sites = layer_sites(L)
    band_sites = [site_for_layer(l, L) for l in band]
    pd_t, pd_f, band_pd = [], [], []
    last_pd: list[list[np.ndarray]] = [[] for _ in sites]
    for c in range(0, len(pairs), REACH_CHUNK):
        ti = torch.tensor([p[0] for p in pairs[c : c + REACH_CHUNK]])
        fi = torch.tensor([p[1] for p in pairs[c : c + REACH_CHUNK]])
        r = torch.arange(len(fi))
        last = (lengths[fi] - 1).long()

        def run(ivs, rows=fi, _last=last, _r=r):
            got = model.run(ids[rows], mask[rows], interventions=ivs).logits
            return prob_diff(got[_r, _last.to(got.device)], true_id, false_id).double().cpu().numpy()

        true_run = model.run(ids[ti], mask[ti], read=sites)
        pd_t.append(prob_diff(true_run.logits[r, last.to(true_run.logits.device)], true_id, false_id).cpu().numpy())
        pd_f.append(run([]))
        cells = pos[fi]  # (R, n_last); identical to pos[ti] by the pairing
        band_pd.append(run([Patch(s, positions=cells, value=true_run.cache[s][r[:, None], cells]) for s in band_sites]))
        for j, s in enumerate(sites):
            at = last[:, None]
            last_pd[j].append(run([Patch(s, positions=at, value=true_run.cache[s][r[:, None], at])]))
    t, f = np.concatenate(pd_t).astype(np.float64), np.concatenate(pd_f)
    return out | {
        "band_cells_share": _share(np.concatenate(band_pd), t, f),
        "last_position_share": [_share(np.concatenate(x), t, f) for x in last_pd],
        "pd_true": float(t.mean()),
        "pd_false": float(f.mean()),
    }


def reach_note(role: str, reach: dict, own_nie: float, nie_floor: float = 0.05, reach_floor: float = 0.1) -> str | None:
    """A note when `role`'s own-direction NIE is ≈ 0 *because* the model's answer does not read the intervened
    cells (band_cells_share < reach_floor), naming where it is read instead; None otherwise."""
    share = reach.get("band_cells_share", float("nan"))
    if not reach.get("n_pairs") or math.isnan(share) or math.isnan(own_nie):
        return None
    if abs(own_nie) >= nie_floor or share >= reach_floor:
        return None
    lps = reach["last_position_share"]
    band = reach["band"]
    where = (
        f": by resid[{band[-1]}] the last position already carries {lps[band[-1]]:.2f} of it, so the answer is "
        "assembled there and does not go through the end-of-statement tokens"
        if lps[band[-1]] >= 0.5
        else ""
    )
    return (
        f"{role}: NIE {_num(own_nie, 4)} ≈ 0 is a property of the model, not of the direction: its answer does "
        f"not read the intervened cells. Patching the full residual of {reach['n_pairs']} correctly judged true "
        f"prompts into matched false ones at the last {reach['n_last']} statement tokens over resid"
        f"[{band[0]}..{band[-1]}] restores {_num(share)} of the P(TRUE) − P(FALSE) gap; the last position alone "
        "restores " + "/".join(_num(v, 2) for v in lps) + f" at resid[0..{len(lps) - 1}]" + where
    )


def _num(x: float, digits: int = 3) -> str:
    """x rounded, without the minus sign of a value that rounds to zero."""
    out = f"{x:.{digits}f}"
    return out[1:] if out.startswith("-") and float(out) == 0 else out


__all__ = ["matched_pairs", "patch_reach", "reach_note"]
