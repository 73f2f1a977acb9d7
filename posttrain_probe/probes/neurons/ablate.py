"""Mean ablation of MLP neurons through the canonical sites, with total and direct effects.

Mean ablation replaces a neuron's activation at `mlp_act.{layer}` (every position) with its mean over a
reference text set. The *total* effect lets everything downstream react, including the final norm's scale;
the *direct* effect patches `final_norm_scale` back to its clean value in the ablated run, so only the
neuron's path through the (frozen) norm and the unembedding remains. For neurons of the last layer nothing
else lies between the MLP and the final norm, so total − direct is the effect mediated by the norm's scale:
the entropy-neuron mechanism of Stolfo et al. 2024.

Batched: many conditions (a condition = a set of neurons ablated together) run in one forward, one batch
row per (copy, condition, text), where copy is total or direct. Statistics are next-token entropy (nats) and
loss at every position that has a next token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from posttrain_probe.pair import Edit, HookedModel, Patch

METRICS = ("dH", "dL", "absdH")  # mean change of entropy, of loss, mean |change of entropy| per token
COPIES = ("total", "direct")


def next_token_stats(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entropy (nats), loss and validity, each (B, T-1), for the prediction at t of token t+1; valid where
    both t and t+1 are real tokens."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    entropy = -(logp.exp() * logp).sum(-1)
    target = input_ids[:, 1:].to(logp.device)
    loss = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    am = attention_mask.to(logp.device).bool()
    valid = am[:, :-1] & am[:, 1:]
    return entropy, loss, valid


@torch.no_grad()
def reference_means(
    model: HookedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: Sequence[int],
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "reference means",
) -> dict[int, torch.Tensor]:
    """Mean activation (M,) float32 at `mlp_act.{l}` over every real token of the reference texts."""
    sums = {l: torch.zeros(model.d_mlp, dtype=torch.float64) for l in layers}
    count = 0
    sites = [f"mlp_act.{l}" for l in layers]
    for s in tqdm(range(0, len(input_ids), batch_size), desc=desc, disable=not progress, leave=False):
        ids, am = input_ids[s : s + batch_size], attention_mask[s : s + batch_size]
        out = model.run(ids, am, read=sites)
        m = am.to(model.device).bool()
        for l, site in zip(layers, sites):
            sums[l] += out.cache[site][m].double().sum(0).cpu()  # (N_tokens, M) -> (M,)
        count += int(m.sum())
    if count == 0:
        raise ValueError("the reference texts have no tokens; pass non-empty texts")
    return {l: (v / count).float() for l, v in sums.items()}


def _ablation_interventions(
    layer: int, row_masks: torch.Tensor, means: torch.Tensor, frozen_rows: Sequence[int], frozen_scale
) -> list:
    """An `Edit` that sets, per batch row, the masked neurons (R, M) to their means, plus a `Patch` of the
    final norm's scale on `frozen_rows` (when any)."""

    def set_to_mean(x: torch.Tensor) -> torch.Tensor:  # (R, T, M)
        m = row_masks.to(x.device)[:, None, :]
        return torch.where(m, means.to(device=x.device, dtype=x.dtype), x)

    ivs = [Edit(f"mlp_act.{layer}", fn=set_to_mean)]
    if len(frozen_rows):
        ivs.append(Patch("final_norm_scale", value=frozen_scale, rows=list(frozen_rows)))
    return ivs


@dataclass
class AblationStats:
    """Per-text results of a batch of ablation conditions.

    clean: (N, 2) per-text mean clean entropy and loss; n_tokens: (N,) valid predictions per text;
    effects: (C, 2, 3, N) per condition, copy (total, direct) and metric (dH, dL, |dH|), the per-text means.
    """

    clean: np.ndarray
    n_tokens: np.ndarray
    effects: np.ndarray

    def aggregate(self) -> tuple[np.ndarray, np.ndarray]:
        """Token-weighted means (C, 2, 3) over texts and their cluster (per-text) standard errors."""
        w = self.n_tokens.astype(np.float64)
        mean = (self.effects * w).sum(-1) / w.sum()
        n = len(w)
        resid = (self.effects - mean[..., None]) * w
        se = np.sqrt((resid**2).sum(-1) * n / max(n - 1, 1)) / w.sum()
        return mean, se

    def clean_means(self) -> tuple[float, float]:
        w = self.n_tokens.astype(np.float64)
        return float((self.clean[:, 0] * w).sum() / w.sum()), float((self.clean[:, 1] * w).sum() / w.sum())


def _per_text_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(R, T) values averaged over valid positions per row -> (R,)."""
    return (x * valid).sum(-1) / valid.sum(-1).clamp_min(1)


@torch.no_grad()
def ablation_effects(
    model: HookedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    conditions: Sequence[Sequence[int]],
    means: torch.Tensor,
    batch_rows: int = 64,
    progress: bool = False,
    desc: str = "ablations",
) -> AblationStats:
    """Total and direct effects of mean-ablating each condition (a set of neurons of `layer`) on the
    next-token entropy and loss of every text, batched `batch_rows` rows per forward."""
    N = input_ids.shape[0]
    C = len(conditions)
    masks = torch.zeros(C, model.d_mlp, dtype=torch.bool)
    for c, ns in enumerate(conditions):
        masks[c, list(ns)] = True
    text_batch = max(1, min(N, batch_rows // 2))
    clean = np.zeros((N, 2))
    n_tok = np.zeros(N, dtype=np.int64)
    effects = np.zeros((C, 2, len(METRICS), N))
    chunks = range(0, N, text_batch)
    per_fwd = max(1, batch_rows // (2 * text_batch))
    total_steps = len(chunks) * -(-C // per_fwd)
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, leave=False)
    for s in chunks:
        ids, am = input_ids[s : s + text_batch], attention_mask[s : s + text_batch]
        b = ids.shape[0]
        out = model.run(ids, am, read=["final_norm_scale"])
        h0, l0, valid = next_token_stats(out.logits, ids, am)
        clean[s : s + b, 0] = _per_text_mean(h0, valid).cpu().numpy()
        clean[s : s + b, 1] = _per_text_mean(l0, valid).cpu().numpy()
        n_tok[s : s + b] = valid.sum(-1).cpu().numpy()
        scale = out.cache["final_norm_scale"]  # (b, T)
        for c0 in range(0, C, per_fwd):
            g = min(per_fwd, C - c0)
            rows = masks[c0 : c0 + g].repeat_interleave(b, 0)  # (g·b, M) [cond][text]
            ivs = _ablation_interventions(layer, rows.repeat(2, 1), means, range(g * b, 2 * g * b), scale.repeat(g, 1))
            res = model.run(ids.repeat(2 * g, 1), am.repeat(2 * g, 1), interventions=ivs)
            h, loss, v = next_token_stats(res.logits, ids.repeat(2 * g, 1), am.repeat(2 * g, 1))
            dh = h - h0.repeat(2 * g, 1)
            vals = [dh, loss - l0.repeat(2 * g, 1), dh.abs()]
            for k, x in enumerate(vals):
                per_text = _per_text_mean(x, v).reshape(2, g, b).permute(1, 0, 2)  # (g, copy, b)
                effects[c0 : c0 + g, :, k, s : s + b] = per_text.cpu().double().numpy()
            bar.update(1)
    bar.close()
    if (n_tok == 0).all():
        raise ValueError("no text has two tokens or more; pass longer evaluation texts")
    return AblationStats(clean=clean, n_tokens=n_tok, effects=effects)
