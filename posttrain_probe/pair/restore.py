"""The restoration engine shared by causal tracing and true/false patching.

A *receiver* run (the noised prompt, or the false statement) gets clean values from a *source* run (the
clean prompt, or the true statement) written back at one token position t and a set of sites; we read the
log-probabilities of a few tokens at the last position. Many restorations share one forward: one batch row
per restoration.

Reuse of the receiver's computation: a restoration at token t leaves positions < t exactly as in the
receiver run (causal attention), so the receiver is run once with an HF KV cache, and each restoration row
feeds only tokens t..T-1 on top of that cache cut to its first t positions (rows grouped by t). Lower layers
at positions ≥ t are still recomputed: skipping them needs per-layer execution, which the bridge does not
offer (its `start_at_layer` still runs the lower blocks), so we do not re-implement the block loop.

`kv_cache_reuse_works(model)` checks the cache path numerically once per model; where it fails (e.g. the
TransformerLens bridge under transformers 5.x, whose attention components ignore HF's `cache=` argument)
rows fall back to feeding the whole prompt — still batched, same numbers, slower.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from posttrain_probe.pair import Add, HookedModel, Patch

KINDS = ("resid", "mlp", "attn")
_KIND_SITE = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
_REUSE_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def window_layers(layer: int, n_layers: int, window: int) -> range:
    """ROME's window of `window` layers centred on `layer`, clipped to the model: [l − w//2, l + ⌈w/2⌉)."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def restoration_sites(kind: str, layer: int, n_layers: int, window: int) -> tuple[str, ...]:
    """The canonical sites one restoration writes: the block output (resid) at `layer`, or the MLP / attention
    outputs over the window centred on `layer`."""
    if kind not in KINDS:
        raise ValueError(f"unknown restoration kind {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "resid":
        return (f"resid_post.{layer}",)
    return tuple(f"{_KIND_SITE[kind]}.{j}" for j in window_layers(layer, n_layers, window))


def source_sites(kinds: Sequence[str], n_layers: int) -> list[str]:
    """Every site the restorations of `kinds` may read from the source run."""
    return [f"{_KIND_SITE[k]}.{l}" for k in kinds for l in range(n_layers)]


def _cut_cache(cache: Any, rows: torch.Tensor, t: int, config) -> Any:
    """A fresh HF cache holding positions [0, t) of the given batch rows of `cache`."""
    from transformers.cache_utils import DynamicCache

    new = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        new.update(layer.keys[rows, :, :t], layer.values[rows, :, :t], i)
    return new


def _cache_complete(cache: Any, n_tokens: int) -> bool:
    """True when every layer of `cache` stores all `n_tokens` positions (sliding-window layers may not)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    return all(getattr(l, "keys", None) is not None and l.keys.shape[-2] == n_tokens for l in layers)


@torch.no_grad()
def kv_cache_reuse_works(model: HookedModel, atol: float = 1e-4) -> bool:
    """Whether `model.run(..., use_cache=True)` returns a usable cache: the last-token logits of a prompt
    fed as prefix (cached) + suffix must equal those of one full forward. Checked once per model."""
    if model in _REUSE_OK:
        return _REUSE_OK[model]
    vocab = model.arch.vocab_size
    ids = (torch.arange(6).unsqueeze(0) * 7 + 3) % vocab
    full = model.run(ids, use_cache=True)
    ok = False
    if _cache_complete(full.past_key_values, ids.shape[1]):
        cut = _cut_cache(full.past_key_values, torch.tensor([0, 0]), 3, model.hf.config)
        part = model.run(ids[[0, 0], 3:], past_key_values=cut, logits_to_keep=1)
        err = (part.logits[:, -1].float() - full.logits[:, -1].float()).abs().max().item()
        scale = full.logits[:, -1].float().abs().max().item()
        ok = err <= atol * max(1.0, scale)
    _REUSE_OK[model] = ok
    return ok


def resolve_kv_reuse(model: HookedModel, mode: str) -> bool:
    """'auto' → use the cache where `kv_cache_reuse_works`; 'on' → require it; 'off' → never."""
    if mode == "off":
        return False
    works = kv_cache_reuse_works(model)
    if mode == "on" and not works:
        raise ValueError(
            f"kv_reuse='on' but the {model.backend} backend does not return a usable KV cache for this "
            "model; "
            "use kv_reuse='auto' (falls back to full-prompt rows) or backend='nnsight'"
        )
    if mode not in ("auto", "on"):
        raise ValueError(f"kv_reuse={mode!r}; choose auto, on or off")
    return works


@dataclass
class Receiver:
    """The run restorations write into: ids (N, T); additive edits per site, each (N, T, D), applied in every
    forward of these rows (the tracing noise); log-probs (N, K) of the scored tokens at the last position;
    its KV cache (None when not reused)."""

    ids: torch.Tensor
    adds: dict[str, torch.Tensor]
    logprobs: torch.Tensor
    cache: Any = None


def _scored(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log-softmax of the last position's logits (R, T', V) gathered at token_ids (R, K) -> (R, K)."""
    logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
    return logp.gather(1, token_ids.to(logp.device)).cpu()


def _add_ivs(adds: dict[str, torch.Tensor], items: torch.Tensor, start: int) -> list[Add]:
    out = []
    for site, vec in adds.items():
        part = vec[items, start:]  # (R, T - start, D)
        if part.abs().max() > 0:
            out.append(Add(site, vector=part))
    return out


@torch.no_grad()
def run_receiver(
    model: HookedModel,
    ids: torch.Tensor,
    token_ids: torch.Tensor,
    adds: dict[str, torch.Tensor] | None = None,
    kv_reuse: bool = True,
) -> Receiver:
    """One forward of the receiver rows (with their additive edits), keeping the KV cache for reuse."""
    adds = {k: v.to(model.device) for k, v in (adds or {}).items()}
    out = model.run(
        ids,
        interventions=_add_ivs(adds, torch.arange(ids.shape[0]), 0),
        use_cache=kv_reuse,
        logits_to_keep=1,
    )
    cache = out.past_key_values if kv_reuse and _cache_complete(out.past_key_values, ids.shape[1]) else None
    return Receiver(ids=ids, adds=adds, logprobs=_scored(out.logits, token_ids), cache=cache)


@dataclass
class Restorations:
    """One row per restoration: receiver row `item`, source row `source`, token `position` and the index into
    `site_sets` of the sites written there (all tensors (R,) long)."""

    item: torch.Tensor
    source: torch.Tensor
    position: torch.Tensor
    site_set: torch.Tensor
    site_sets: list[tuple[str, ...]]

    def __post_init__(self) -> None:
        n = self.item.shape[0]
        for name in ("source", "position", "site_set"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Restorations.{name} must have shape ({n},) like item")
        if n and int(self.site_set.max()) >= len(self.site_sets):
            raise ValueError("Restorations.site_set indexes past site_sets; pass one tuple per index")


@torch.no_grad()
def restore(
    model: HookedModel,
    receiver: Receiver,
    sources: dict[str, torch.Tensor],
    rows: Restorations,
    token_ids: torch.Tensor,
    max_batch_tokens: int = 8192,
    progress: bool = False,
    desc: str = "restorations",
) -> torch.Tensor:
    """Log-probs (R, K) of `token_ids[item]` at the last position, for every restoration row.

    `sources[site]` is (S, T, D): the values written at (row, position). Rows sharing a position share the
    receiver's cached prefix; each forward holds at most `max_batch_tokens` fed tokens.
    """
    R = rows.item.shape[0]
    out = torch.empty(R, token_ids.shape[1])
    if R == 0:
        return out
    T = receiver.ids.shape[1]
    all_sites = sorted({s for ss in rows.site_sets for s in ss})
    col = {s: i for i, s in enumerate(all_sites)}
    member = torch.zeros(len(rows.site_sets), len(all_sites), dtype=torch.bool)  # (n_sets, n_sites)
    for j, ss in enumerate(rows.site_sets):
        member[j, [col[s] for s in ss]] = True
    src = {s: sources[s] for s in all_sites}
    chunks = []
    for t in torch.unique(rows.position).tolist():
        idx = (rows.position == t).nonzero().flatten()
        start = t if receiver.cache is not None else 0
        per = max(1, max_batch_tokens // (T - start))
        chunks += [(t, start, idx[i : i + per]) for i in range(0, len(idx), per)]
    for t, start, idx in tqdm(chunks, desc=desc, disable=not progress, leave=False):
        items = rows.item[idx]
        ivs: list = _add_ivs(receiver.adds, items, start)
        m = member[rows.site_set[idx]]  # (r, n_sites)
        for c in m.any(0).nonzero().flatten().tolist():
            site = all_sites[c]
            local = m[:, c].nonzero().flatten()
            value = src[site][rows.source[idx[local]], t].unsqueeze(1)  # (r_site, 1, D)
            ivs.append(Patch(site, value=value, positions=[t - start], rows=local))
        kw: dict[str, Any] = {"logits_to_keep": 1}
        if start > 0:
            kw["past_key_values"] = _cut_cache(receiver.cache, items.to(model.device), start, model.hf.config)
        res = model.run(receiver.ids[items, start:], interventions=ivs, **kw)
        out[idx] = _scored(res.logits, token_ids[items])
    return out
