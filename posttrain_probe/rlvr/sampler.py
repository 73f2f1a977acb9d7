"""Batched, KV-cached sampling from any HF causal LM, with common random numbers.

Prompts are left-padded; each row's positions count only its attended tokens, so a padded row sees
exactly what it would see alone. One forward of the distinct prompts fills the cache (computing the
logits of the last position only; a prompt repeated G times, as in a GRPO group, is run once and its cache rows
copied: on the CPU the copies' tokens equal those of prefilling every row, tested), then one forward per new token
extends it.

Sampling is inverse-CDF with one uniform number per (row, new position), drawn up front from the
caller's generator: the token at step t is the first index whose cumulative probability exceeds u[b, t].
Two policies given the same uniforms make the same choice wherever their CDFs agree, which is what
"common random numbers" across interventions means here (same prompts, same seeds → runs differ only by
the policy). temperature = 0 is greedy decoding (argmax, ties to the lowest id, as HF `generate`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from posttrain_probe.rlvr.entropy import (
    cache_argument,
    distinct_rows,
    logp_entropy_from_logits,
    position_ids_from_mask,
)


@dataclass
class Rollout:
    """Sampled continuations. `response_mask` marks generated tokens up to and including the stop token."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) long
    response_ids: torch.Tensor  # (B, R) right-padded with pad_id
    response_mask: torch.Tensor  # (B, R) bool
    finished: torch.Tensor  # (B,) bool: ended with a stop token (else truncated at max_new_tokens)
    logp: torch.Tensor | None = None  # (B, R) float32 log π(token) of the sampling distribution, 0 on padding
    entropy: torch.Tensor | None = None  # (B, R) float32 H of the sampling distribution (nats), 0 on padding

    @property
    def lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)

    def full(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, target_mask) of prompt + response, shape (B, P + R)."""
        ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)
        attn = torch.cat([self.prompt_mask, self.response_mask.long()], dim=1)
        target = torch.cat([torch.zeros_like(self.prompt_mask, dtype=torch.bool), self.response_mask], dim=1)
        return ids, attn, target

    def full_scores(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log π, H) of the sampling distributions on the (B, P + R) layout of `full`, 0 off the response; None
        for a greedy rollout."""
        if self.logp is None or self.entropy is None:
            return None
        zeros = torch.zeros(self.prompt_ids.shape, dtype=self.logp.dtype, device=self.logp.device)
        return torch.cat([zeros, self.logp], dim=1), torch.cat([zeros, self.entropy], dim=1)


def _cache_kwarg(model: torch.nn.Module) -> str:
    name = cache_argument(model)
    if name is None:
        raise ValueError(f"{type(model).__name__}.forward takes no KV cache argument; it cannot be sampled here")
    return name


def _returned_cache(out: Any) -> Any:
    for name in ("cache", "past_key_values"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    raise ValueError("the model returned no KV cache although use_cache=True")


def new_cache(model: torch.nn.Module, cache_name: str) -> dict[str, Any]:
    """The empty KV cache to pass to the prefill: an HF `DynamicCache` for `past_key_values` models (the Cache
    API; legacy tuples are deprecated), nothing for other models (they create their own)."""
    config = getattr(model, "config", None)
    if cache_name != "past_key_values" or config is None:
        return {}
    from transformers import DynamicCache

    return {cache_name: DynamicCache(config=config)}


def _distinct_rows(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`distinct_rows` of the prompt batch, or None when every row is distinct."""
    first, inverse = distinct_rows(ids, mask)
    return None if len(first) == len(ids) else (first, inverse)


def _prefill(
    model: torch.nn.Module,
    ids: torch.Tensor,
    attn: torch.Tensor,
    positions: torch.Tensor,
    cache_name: str,
    kwargs: dict[str, Any],
) -> tuple[torch.Tensor, Any]:
    """Last-position logits (B, V) and the filled KV cache of the prompt batch. Each distinct prompt runs once and
    its cache rows are copied to its repeats when the cache can copy rows (HF's Cache API,
    `batch_select_indices`); a model whose cache cannot is prefilled on every row."""

    def run(rows: torch.Tensor | slice) -> tuple[torch.Tensor, Any]:
        out = model(
            input_ids=ids[rows],
            attention_mask=attn[rows],
            position_ids=positions[rows],
            use_cache=True,
            **new_cache(model, cache_name),
            **kwargs,
        )
        return out.logits[:, -1, :], _returned_cache(out)  # the same DynamicCache, filled in place

    distinct = _distinct_rows(ids, attn)
    if distinct is None:
        return run(slice(None))
    logits, cache = run(distinct[0])
    if not hasattr(cache, "batch_select_indices"):
        return run(slice(None))
    cache.batch_select_indices(distinct[1])
    return logits[distinct[1]], cache


def draw_tokens(logits: torch.Tensor, uniforms: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """Tokens (B,) from last-position logits (B, V): inverse-CDF with `uniforms` (B,), or argmax if T = 0."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits.double()
    probs = torch.softmax(z if temperature == 1.0 else z / temperature, dim=-1)  # z / 1.0 is z: skip a (B, V) pass
    cdf = probs.cumsum(-1)
    u = uniforms.to(cdf.dtype)[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    stop_ids: list[int] | tuple[int, ...],
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Sample up to `max_new_tokens` per row; a row stops after emitting any of `stop_ids`.

    prompt_ids, prompt_mask: (B, P), left-padded. `generator` (CPU) supplies the (B, max_new_tokens)
    uniforms; required unless temperature == 0.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if temperature > 0 and generator is None:
        raise ValueError("sampling at temperature > 0 needs a torch.Generator (for common random numbers)")
    if prompt_mask[:, -1].eq(0).any():
        raise ValueError("prompts must be left-padded: the last column of prompt_mask has a 0")
    device = prompt_ids.device
    batch = prompt_ids.shape[0]
    uniforms = None
    if temperature > 0:
        uniforms = torch.rand(batch, max_new_tokens, generator=generator, dtype=torch.float64).to(device)
    cache_name = _cache_kwarg(model)
    keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
    stop = torch.tensor(sorted(set(stop_ids)), device=device, dtype=torch.long)

    attn = prompt_mask.long()
    positions = position_ids_from_mask(attn)
    kwargs: dict[str, Any] = {"logits_to_keep": 1} if keep_last else {}
    logits, cache = _prefill(model, prompt_ids, attn, positions, cache_name, kwargs)
    next_pos = positions[:, -1:] + 1  # (B, 1)

    # the attention mask grows by one column per step: write into a preallocated (B, P + max_new) buffer
    attn_buf = torch.ones(batch, attn.shape[1] + max_new_tokens, dtype=attn.dtype, device=device)
    attn_buf[:, : attn.shape[1]] = attn
    width = attn.shape[1]
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)
    entropies = torch.zeros_like(logps)
    alive = torch.ones(batch, dtype=torch.bool, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    n_steps = 0
    for t in range(max_new_tokens):
        tok = draw_tokens(logits, None if uniforms is None else uniforms[:, t], temperature)
        if temperature > 0:  # the rollout policy's log π and H, as `score_tokens` computes them from logits
            logps[:, t], entropies[:, t] = logp_entropy_from_logits(logits, tok, temperature)
        tok = torch.where(alive, tok, torch.full_like(tok, pad_id))
        tokens[:, t] = tok
        n_steps = t + 1
        hit_stop = alive & torch.isin(tok, stop)
        finished |= hit_stop
        alive &= ~hit_stop
        if not alive.any() or t == max_new_tokens - 1:
            break
        width += 1
        out = model(
            input_ids=tok[:, None],
            attention_mask=attn_buf[:, :width],
            position_ids=next_pos,
            use_cache=True,
            **{cache_name: cache},
            **kwargs,
        )
        cache = _returned_cache(out)
        logits = out.logits[:, -1, :]  # (B, V)
        next_pos = next_pos + 1
    tokens = tokens[:, :n_steps]
    # valid = generated while alive: every token up to and including the first stop token
    is_stop = torch.isin(tokens, stop)
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    mask = stops_before.eq(0)
    tokens = tokens.masked_fill(~mask, pad_id)
    if temperature == 0:
        return Rollout(prompt_ids, prompt_mask.long(), tokens, mask, finished)
    logps, entropies = logps[:, :n_steps] * mask, entropies[:, :n_steps] * mask
    return Rollout(prompt_ids, prompt_mask.long(), tokens, mask, finished, logps, entropies)
