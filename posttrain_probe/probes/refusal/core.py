"""Pure pieces of the refusal analysis: scores, divergences, candidate selection, per-row interventions.

Everything here is a function of tensors / tables (no model is loaded), so it is tested against hand-computed
references; `refusal.py` composes these with the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from posttrain_probe.pair import Edit
from posttrain_probe.probes.refusal.config import DEFAULT_REFUSAL_PHRASES

# Arditi et al. (2024)'s substring list, used here as prefixes of the stripped completion.


def is_refusal(completion: str, phrases: Sequence[str] = DEFAULT_REFUSAL_PHRASES) -> bool:
    """Whether the completion (leading whitespace stripped) starts with one of `phrases`."""
    text = completion.lstrip()
    return any(text.startswith(p) for p in phrases)


def refusal_start_token_ids(tokenizer, phrases: Sequence[str]) -> list[int]:
    """First token of each phrase, written bare and after a space (BPE vocabularies differ); unknown-token
    ids are dropped. These are the tokens whose probability the generation-free score measures."""
    unk = tokenizer.unk_token_id
    ids: set[int] = set()
    for p in phrases:
        for text in (p, " " + p):
            toks = tokenizer(text, add_special_tokens=False)["input_ids"]
            if toks and toks[0] != unk:
                ids.add(int(toks[0]))
    return sorted(ids)


def refusal_log_odds(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """log p(refusal start) − log(1 − p(refusal start)) from next-token logits (B, V) → (B,).

    Computed as logsumexp over refusal tokens minus logsumexp over the others, which is exact and stable.
    """
    if not len(token_ids):
        raise ValueError("no refusal-start tokens: pass phrases whose first token is in the vocabulary")
    lf = logits.float()
    mask = torch.zeros(lf.shape[-1], dtype=torch.bool, device=lf.device)
    mask[torch.as_tensor(list(token_ids), device=lf.device)] = True
    if mask.all():
        raise ValueError("every vocabulary token is a refusal-start token; the log-odds are undefined")
    neg_inf = torch.tensor(float("-inf"), device=lf.device)
    pos = torch.where(mask, lf, neg_inf).logsumexp(-1)
    neg = torch.where(mask, neg_inf, lf).logsumexp(-1)
    return pos - neg


def kl_next_token(ref_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p_new) of next-token distributions, (B, V) each → (B,) in nats."""
    lp = ref_logits.float().log_softmax(-1)
    lq = new_logits.float().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def select_candidate(
    scores: pd.DataFrame,
    n_layers: int,
    kl_max: float = 0.1,
    max_layer_frac: float = 0.8,
    induce_min: float = 0.0,
) -> tuple[int, pd.DataFrame]:
    """Arditi et al.'s rule: among candidates with layer < max_layer_frac·L, KL < kl_max and induce score >
    induce_min, pick the lowest bypass score. Returns (row index of the choice, table with pass columns).

    If no candidate passes every filter, the lowest bypass score among those passing the layer filter is
    chosen and `passes_all` is False for it: the caller reports that the selection is unfiltered. Zero
    candidates (column `norm` = 0, e.g. layer 0 at template tokens, where both classes see the same
    embedding) are never chosen.
    """
    need = {"layer", "bypass_score", "induce_score", "kl"}
    if not need <= set(scores.columns):
        raise ValueError(f"candidate table lacks columns {sorted(need - set(scores.columns))}")
    if scores.empty:
        raise ValueError("no candidates to select from")
    t = scores.copy()
    nonzero = t["norm"] > 0 if "norm" in t.columns else pd.Series(True, index=t.index)
    if not nonzero.any():
        raise ValueError(
            "every candidate direction is zero: harmful and harmless prompts give identical activations at "
            "the post-instruction positions; check the data and the prompt template"
        )
    t["passes_layer"] = (t["layer"] < max_layer_frac * n_layers) & nonzero
    t["passes_kl"] = t["kl"] < kl_max
    t["passes_induce"] = t["induce_score"] > induce_min
    t["passes_all"] = t.passes_layer & t.passes_kl & t.passes_induce
    pool = t[t.passes_all]
    if pool.empty:
        pool = t[t.passes_layer] if t.passes_layer.any() else t[nonzero]
    bypass = pool["bypass_score"].to_numpy(dtype=float)
    choice = pool.index[int(np.nanargmin(np.where(np.isnan(bypass), np.inf, bypass)))]
    t["selected"] = t.index == choice
    return choice, t


def row_ablation(directions: torch.Tensor, n_layers: int) -> list[Edit]:
    """Directional ablation x ← x − (x·r̂_b) r̂_b with one direction per batch row b (rows with a zero
    direction are untouched), at resid_pre, resid_mid and resid_post of every layer, every position."""
    norms = directions.float().norm(dim=-1, keepdim=True)
    unit = torch.where(norms > 0, directions.float() / norms.clamp_min(1e-30), torch.zeros_like(directions.float()))

    def fn(x: torch.Tensor) -> torch.Tensor:  # x: (B, T, D)
        r = unit.to(x.device)
        xf = x.float()
        proj = (xf * r[:, None, :]).sum(-1, keepdim=True)  # (B, T, 1)
        return (xf - proj * r[:, None, :]).to(x.dtype)

    kinds = ("resid_pre", "resid_mid", "resid_post")
    return [Edit(f"{k}.{l}", fn=fn) for l in range(n_layers) for k in kinds]


def row_addition(vectors: torch.Tensor, layers: Sequence[int], scale: float = 1.0) -> list[Edit]:
    """Activation addition x ← x + scale·v_b at resid_pre of layer `layers[b]`, every position; one Edit
    per distinct layer, rows at other layers get zero."""
    if len(layers) != vectors.shape[0]:
        raise ValueError(f"{len(layers)} layers for {vectors.shape[0]} rows; pass one layer per row")
    edits = []
    lay = torch.as_tensor(list(layers))
    for l in sorted(set(int(x) for x in layers)):
        v = torch.where((lay == l)[:, None], vectors.float(), torch.zeros_like(vectors.float())) * scale

        def fn(x: torch.Tensor, v: torch.Tensor = v) -> torch.Tensor:  # x: (B, T, D)
            return (x.float() + v.to(x.device)[:, None, :]).to(x.dtype)

        edits.append(Edit(f"resid_pre.{l}", fn=fn))
    return edits
