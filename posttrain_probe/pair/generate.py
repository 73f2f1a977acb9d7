"""Greedy generation through `HookedModel.run`, so interventions act on every decoding step.

A KV-cached loop: one forward over the left-padded prompts, then one forward per new token with the
cache. Position ids come from the attention mask (cumsum − 1, pads at 1), as HF `generate` does, so the
tokens equal HF greedy `generate` on the same model. Interventions run on every forward and must be
position-agnostic (positions=None): a position index means a different token at each step.

Some backends return an empty cache (the TransformerLens 4.3 bridge's attention does not write into the HF
`DynamicCache`); the loop checks the cache after the prompt forward and, if it is not filled, recomputes the
whole sequence at each step instead (same tokens, quadratic cost). `GreedyOutput.used_kv_cache` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .interventions import Intervention, Receipt
from .loading import HookedModel


@dataclass
class GreedyOutput:
    """New tokens (B, N) (pad after EOS), their texts, which rows ended with EOS, and the logits at the
    first response position (B, V), which generation-free scores reuse."""

    tokens: torch.Tensor
    texts: list[str]
    finished: torch.Tensor
    first_logits: torch.Tensor
    used_kv_cache: bool = True
    receipts: list[list[Receipt]] = field(default_factory=list, repr=False)


def cache_is_filled(cache: Any, n_tokens: int) -> bool:
    """True when every layer of an HF cache stores `n_tokens` positions (the backend really cached)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    return all(getattr(l, "keys", None) is not None and l.keys.shape[-2] == n_tokens for l in layers)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counting real tokens only; pad slots get 1 (HF's convention)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def greedy_generate(
    model: HookedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    interventions: Sequence[Intervention] = (),
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    skip_special_tokens: bool = True,
    use_kv_cache: bool = True,
) -> GreedyOutput:
    """Greedy-decode up to `max_new_tokens` from left-padded prompts with `interventions` on every step.

    Stops early when every row has produced an EOS token (rows that finished get `pad_token_id`).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
    for iv in interventions:
        if iv.positions is not None:
            raise ValueError(
                f"intervention at {iv.site} has positions={iv.positions!r}; during generation interventions "
                "must be position-agnostic (positions=None), because each decode step sees one new token"
            )
    tok = model.tokenizer
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if (attention_mask[:, -1] == 0).any():
        raise ValueError("prompts are right-padded; encode them with padding_side='left'")
    if eos_token_id is None:
        eos_token_id = model.hf.generation_config.eos_token_id or tok.eos_token_id
    eos = torch.as_tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or []), dtype=torch.long
    )
    if pad_token_id is None:
        pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else int(eos[0]) if eos.numel() else 0
    dev = model.device
    ids = input_ids.to(dev)
    mask = attention_mask.to(dev).long()
    eos = eos.to(dev)
    n_ctx = model.max_context
    if n_ctx is not None and ids.shape[1] + max_new_tokens > n_ctx:
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context "
            f"of {n_ctx}; lower max_new_tokens or shorten the prompts"
        )
    B = ids.shape[0]
    finished = torch.zeros(B, dtype=torch.bool, device=dev)
    ended_eos = torch.zeros(B, dtype=torch.bool, device=dev)
    new_tokens: list[torch.Tensor] = []
    receipts: list[list[Receipt]] = [[] for _ in interventions]
    step_ids, pkv, first_logits = ids, None, None
    seq = ids
    cached = use_kv_cache
    for _ in range(max_new_tokens):
        if cached:
            pos = position_ids_from_mask(mask)[:, -step_ids.shape[1] :]
            kw: dict[str, Any] = dict(position_ids=pos, use_cache=True, past_key_values=pkv)
            out = model.run(step_ids, attention_mask=mask, interventions=interventions, **kw)
            cached = cache_is_filled(out.past_key_values, mask.shape[1])
        else:
            pos = position_ids_from_mask(mask)
            out = model.run(seq, attention_mask=mask, interventions=interventions, position_ids=pos)
        for acc, got in zip(receipts, out.receipts):
            acc.extend(got)
        logits = out.logits[:, -1].float()  # (B, V)
        if first_logits is None:
            first_logits = logits.detach().cpu()
        nxt = logits.argmax(-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad_token_id), nxt)
        new_tokens.append(nxt)
        is_eos = torch.isin(nxt, eos) & ~finished
        ended_eos |= is_eos
        finished |= is_eos
        pkv = out.past_key_values
        step_ids = nxt.unsqueeze(1)
        seq = torch.cat([seq, step_ids], dim=1)
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        if finished.all():
            break
    tokens = torch.stack(new_tokens, dim=1).cpu()  # (B, N)
    texts = tok.batch_decode(tokens, skip_special_tokens=skip_special_tokens)
    return GreedyOutput(tokens, texts, ended_eos.cpu(), first_logits, cached, receipts)
