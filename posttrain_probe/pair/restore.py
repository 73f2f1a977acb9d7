"""The restoration engine shared by causal tracing and true/false patching.

A *receiver* run (the noised prompt, or the false statement) gets clean values from a *source* run (the
clean prompt, or the true statement) written back at one token position t and a set of sites; we read the
log-probabilities of a few tokens at the last position. Many restorations share one forward: one batch row
per restoration.

Reuse of the receiver's computation: a restoration at token t leaves positions < t exactly as in the
receiver run (causal attention), so the receiver is run once with an HF KV cache, and each restoration row
feeds only tokens t..T-1 on top of that cache cut to its first t positions (rows grouped by t). Blocks below
the lowest restored layer l leave positions ≥ t as in the receiver too: where the backend can skip blocks
(nnsight's `skip`, `Engine.can_resume`), the receiver also keeps resid_pre of every layer and each row
resumes at block l from it (rows grouped by (t, l)); the HF model still runs its own blocks from l on. The
bridge cannot skip blocks (its `start_at_layer` still runs the lower ones), so there they are recomputed.

`kv_cache_reuse_works(model)` checks the cache path numerically once per model; where it fails (e.g. the
TransformerLens bridge under transformers 5.x, whose attention components ignore HF's `cache=` argument)
rows fall back to feeding the whole prompt — still batched, same numbers, slower. `block_skip_works(model)`
checks block skipping the same way.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from posttrain_probe.pair import Add, HookedModel, Patch
from posttrain_probe.pair.sites import parse_site

KINDS = ("resid", "mlp", "attn")
_KIND_SITE = {"resid": "resid_post", "mlp": "mlp_out", "attn": "attn_out"}
_REUSE_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SKIP_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
UNEMBED_ROWS = 256  # rows per deferred unembedding: (256, V) float logits at a time


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


def _cut_cache(cache: Any, rows: torch.Tensor, t: int, config, from_layer: int = 0) -> Any:
    """A fresh HF cache holding positions [0, t) of the given batch rows of `cache`, at layer 0 (which gives
    the cache's length) and at the layers ≥ `from_layer` (the ones a forward resumed there runs)."""
    from transformers.cache_utils import DynamicCache

    new = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        if i == 0 or i >= from_layer:
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


@torch.no_grad()
def _skip_checks(model: HookedModel, atol: float = 1e-4) -> tuple[bool, bool]:
    """(resuming at a block, unembedding outside the forward) each give the full forward's logits."""
    if model in _SKIP_OK:
        return _SKIP_OK[model]
    ok = (False, False)
    if model.engine.can_resume and model.n_layers > 1:
        ids = (torch.arange(6).unsqueeze(0) * 7 + 3) % model.arch.vocab_size
        start = model.n_layers // 2
        full = model.run(ids, read=[f"resid_pre.{start}"])
        scale = atol * max(1.0, full.logits.float().abs().max().item())

        def close(logits: torch.Tensor) -> bool:
            return logits.shape == full.logits.shape and (logits - full.logits).abs().max().item() <= scale

        try:
            resumed = close(model.run(ids, resume_at=(start, full.cache[f"resid_pre.{start}"])).logits)
        except Exception:  # a block whose output is not the hidden state alone (e.g. a tuple)
            resumed = False
        # a model that changes the logits after its output embedding fails this where its logits are large; soft-
        # capping (Gemma-2) is refused outright, as it is invisible on the small logits of a random-init model
        capped = getattr(model.hf.config.get_text_config(), "final_logit_softcapping", None) is not None
        ok = (resumed, not capped and close(model.unembed(model.run(ids, unembed=False).hidden)))
    _SKIP_OK[model] = ok
    return ok


def block_skip_works(model: HookedModel) -> bool:
    """Whether `model.run(..., resume_at=(l, resid_pre.l))` gives the logits of the full forward (the backend
    can skip blocks and the HF blocks return what it substitutes). Checked once per model."""
    return _skip_checks(model)[0]


def deferred_unembed_works(model: HookedModel) -> bool:
    """Whether `model.unembed` of `model.run(..., unembed=False).hidden` gives the full forward's logits (the
    backend can skip the unembedding and the model does nothing after it). Checked once per model."""
    return _skip_checks(model)[1]


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
    its KV cache (None when not reused); resid[l] = its resid_pre.l (N, T, D) for l ≥ 1 where restorations
    resume at their lowest layer (empty: every row runs all blocks)."""

    ids: torch.Tensor
    adds: dict[str, torch.Tensor]
    logprobs: torch.Tensor
    cache: Any = None
    resid: dict[int, torch.Tensor] = field(default_factory=dict)


def _scored(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log-softmax of the last position's logits (R, T', V) gathered at token_ids (R, K) -> (R, K), without
    materializing the (R, V) log-softmax: logit − logsumexp."""
    x = logits[:, -1].float()  # (R, V)
    return (x.gather(1, token_ids.to(x.device)) - torch.logsumexp(x, dim=-1, keepdim=True)).cpu()


def _after(site: str, layer: int, n_layers: int) -> bool:
    """Whether `site` runs in a forward resumed at block `layer` (resid_pre.layer is the resumed value)."""
    s = parse_site(site, n_layers)
    return s.layer is None or s.layer > layer or (s.layer == layer and s.kind != "resid_pre")


def _lowest_layer(sites: Sequence[str], n_layers: int) -> int:
    """The lowest block any of `sites` lies in (n_layers − 1 for sites after the blocks only)."""
    layers = [parse_site(s, n_layers).layer for s in sites]
    return min([n_layers - 1] + [l for l in layers if l is not None])


def _add_ivs(
    adds: dict[str, torch.Tensor], items: torch.Tensor, start: int, n_layers: int, resume: int = 0
) -> list[Add]:
    """The receiver's additive edits for rows `items` from position `start` on, those a forward resumed at
    block `resume` runs (the others are in its resumed residual)."""
    out = []
    for site, vec in adds.items():
        if resume and not _after(site, resume, n_layers):
            continue
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
    skip_blocks: bool = False,
) -> Receiver:
    """One forward of the receiver rows (with their additive edits), keeping the KV cache for reuse and, with
    `skip_blocks` (see `block_skip_works`), resid_pre of every layer ≥ 1 for restorations to resume from."""
    adds = {k: v.to(model.device) for k, v in (adds or {}).items()}
    L = model.n_layers
    reads = [f"resid_pre.{l}" for l in range(1, L)] if skip_blocks else []
    out = model.run(
        ids,
        read=reads,
        interventions=_add_ivs(adds, torch.arange(ids.shape[0]), 0, L),
        use_cache=kv_reuse,
        logits_to_keep=1,
    )
    cache = out.past_key_values if kv_reuse and _cache_complete(out.past_key_values, ids.shape[1]) else None
    resid = {l: out.cache[f"resid_pre.{l}"] for l in range(1, L)} if skip_blocks else {}
    return Receiver(ids=ids, adds=adds, logprobs=_scored(out.logits, token_ids), cache=cache, resid=resid)


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


def resume_plan(
    lows: Sequence[int], counts: Sequence[int], fed: int, n_layers: int, overhead_tokens: int, head_blocks: int = 1
) -> dict[int, int]:
    """The block rows of each lowest layer in `lows` (ascending, `counts` rows each, `fed` tokens a row) resume
    at: consecutive lowest layers share one forward from the lowest of them, where that is cheaper. Cost of a
    forward from block a fed N tokens: (N + overhead_tokens) · (L − a) + overhead_tokens · head_blocks, i.e.
    every block run (and the head) costs as much as `overhead_tokens` more tokens (reading its weights)."""
    m = len(lows)
    best = [0.0] + [math.inf] * m  # best[j]: cheapest plan for lows[:j]
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        tokens = 0
        for i in range(j, 0, -1):  # the last forward covers lows[i-1 : j] and resumes at lows[i-1]
            tokens += counts[i - 1] * fed
            cost = best[i - 1] + (tokens + overhead_tokens) * (n_layers - lows[i - 1]) + overhead_tokens * head_blocks
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    plan, j = {}, m
    while j > 0:
        i = cut[j]
        plan.update({lo: lows[i] for lo in lows[i:j]})
        j = i
    return plan


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
    block_overhead_tokens: int = 32,
    defer_unembed: bool | None = None,
) -> torch.Tensor:
    """Log-probs (R, K) of `token_ids[item]` at the last position, for every restoration row.

    `sources[site]` is (S, T, D): the values written at (row, position). Rows sharing a position share the
    receiver's cached prefix, and where the receiver kept its residuals (`Receiver.resid`) rows also sharing
    their lowest restored layer resume there, grouped so that fewer, larger forwards pay for the blocks they
    rerun (`resume_plan`); each forward holds at most `max_batch_tokens` fed tokens. With `defer_unembed`
    (default: where `deferred_unembed_works`) the forwards stop before the unembedding, which then runs on
    `UNEMBED_ROWS` rows at a time.
    """
    R = rows.item.shape[0]
    out = torch.empty(R, token_ids.shape[1])
    if R == 0:
        return out
    T, L = receiver.ids.shape[1], model.n_layers
    low = torch.tensor([_lowest_layer(ss, L) if receiver.resid else 0 for ss in rows.site_sets])
    row_low = low[rows.site_set]  # (R,) the block each row resumes at (0: all blocks run)
    all_sites = sorted({s for ss in rows.site_sets for s in ss})
    col = {s: i for i, s in enumerate(all_sites)}
    member = torch.zeros(len(rows.site_sets), len(all_sites), dtype=torch.bool)  # (n_sets, n_sites)
    for j, ss in enumerate(rows.site_sets):
        member[j, [col[s] for s in ss]] = True
    src = {s: sources[s] for s in all_sites}
    chunks = []
    defer = deferred_unembed_works(model) if defer_unembed is None else defer_unembed
    hidden = torch.empty(R, model.d_model, device=model.device, dtype=model.hf.dtype) if defer else None  # (R, D)
    # the head's weights in blocks' (≈ 12·D² each), read once per forward unless unembedded afterwards
    head = 0 if defer else max(1, model.arch.vocab_size // (12 * model.d_model))
    for t in torch.unique(rows.position).tolist():
        at = (rows.position == t).nonzero().flatten()
        start = t if receiver.cache is not None else 0
        lows, counts = torch.unique(row_low[at], return_counts=True)
        resume = resume_plan(lows.tolist(), counts.tolist(), T - start, L, block_overhead_tokens, head)
        row_resume = torch.tensor([resume[int(lo)] for lo in row_low[at]])
        for lo in sorted(set(resume.values())):
            idx = at[row_resume == lo]
            per = max(1, max_batch_tokens // (T - start))
            chunks += [(t, lo, start, idx[i : i + per]) for i in range(0, len(idx), per)]
    for t, lo, start, idx in tqdm(chunks, desc=desc, disable=not progress, leave=False):
        items = rows.item[idx]
        ivs: list = _add_ivs(receiver.adds, items, start, L, lo)
        m = member[rows.site_set[idx]]  # (r, n_sites)
        for c in m.any(0).nonzero().flatten().tolist():
            site = all_sites[c]
            local = m[:, c].nonzero().flatten()
            value = src[site][rows.source[idx[local]], t].unsqueeze(1)  # (r_site, 1, D)
            ivs.append(Patch(site, value=value, positions=[t - start], rows=local))
        kw: dict[str, Any] = {"logits_to_keep": 1}
        if start > 0:
            kw["past_key_values"] = _cut_cache(receiver.cache, items.to(model.device), start, model.hf.config, lo)
        if lo > 0:
            kw["resume_at"] = (lo, receiver.resid[lo][items.to(model.device), start:])  # (r, T - start, D)
        res = model.run(receiver.ids[items, start:], interventions=ivs, unembed=not defer, **kw)
        if defer:
            hidden[idx] = res.hidden[:, -1]
        else:
            out[idx] = _scored(res.logits, token_ids[items])
    for b in range(0, R if defer else 0, UNEMBED_ROWS):  # the head once for many rows: its weights read less
        logits = model.unembed(hidden[b : b + UNEMBED_ROWS])[:, None]  # (r, 1, V)
        out[b : b + UNEMBED_ROWS] = _scored(logits, token_ids[rows.item[b : b + UNEMBED_ROWS]])
    return out
