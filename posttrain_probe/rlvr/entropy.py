"""Token log-probs and entropies from logits, in chunks, plus the per-token entropy-change predictors.

Memory rule: a (B, T, V) float tensor is never built. `score_tokens` runs the HF decoder once to get the
hidden states, gathers the positions that predict a target token, and applies the model's own output head
to `chunk_size` of them at a time; with gradients on, each chunk is checkpointed, so backward recomputes
that chunk's logits instead of keeping them all.

Predictors of the entropy change (Cui et al. 2025; Hao et al. 2025):
- centred covariance per token  Cov_i = (log π_i − mean log π)(A_i − mean A)   over valid tokens;
  a step's predicted ΔH ∝ −mean_i Cov_i (natural-PG form of their Theorem 2);
- STEER's Ω_i = (A_i / π_old,i) · p_i (1 − p_i) (ln p_i + H_i),  p = current probability of the sampled
  token, H = the rollout-time token entropy; predicted ΔH ∝ −mean_i Ω_i.
Both predictors are proportional to the learning rate with an unknown constant, so they are compared to
the realized ΔH by sign and correlation, not by value.

The exact first-order term (the ceiling any per-token predictor can reach): for a softmax policy π = softmax(z)
whose logits change by δz, H(softmax(z + δz)) − H(π) = −Cov_{a∼π}(log π(a), δz(a)) + O(‖δz‖²)
(`first_order_entropy_change`), with δz measured from the model before and after an update
(`position_logits`). Under a natural policy-gradient step on a tabular softmax, δz = η(A − mean A) = η F⁺∇J and
the term is −η Cov_{a∼π}(log π(a), A(a)) (Cui et al.'s Theorem 2); tests/test_rlvr_first_order.py checks both.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..utils.hf import dense_attention_mask

Head = Callable[[torch.Tensor], torch.Tensor]


def output_head(model: torch.nn.Module) -> Head:
    """hidden (N, D) → logits (N, V) through the model's own output layer, with the post-head transforms
    that some HF families apply in `forward` (Gemma-2 final soft-capping, Cohere logit_scale, Granite
    logits_scaling). `check_head_matches_forward` verifies the result against the full forward.

    Under autocast (a bf16 decoder body) the head runs outside it, on hidden states cast to the head's own
    dtype, so log-probs and entropies come from full-precision logits; without autocast nothing changes."""
    lm_head = model.get_output_embeddings()
    cfg = model.config
    softcap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)
    divide = getattr(cfg, "logits_scaling", None)

    def head(h: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(h.device.type):
            with torch.autocast(h.device.type, enabled=False):
                return head(h.to(lm_head.weight.dtype))
        logits = lm_head(h)
        if scale is not None:
            logits = logits * scale
        if divide is not None:
            logits = logits / divide
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    return head


def logp_entropy_from_logits(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(target) and the entropy H(π) in nats of softmax(logits / temperature), row-wise.

    logits (N, V), targets (N,) → two (N,) float32 tensors.
    """
    z = logits.float()
    if temperature != 1.0:  # z / 1.0 is z bit for bit: skip one pass over a (N, V) block
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(-1, targets[:, None]).squeeze(-1) - lse
    entropy = lse - (torch.softmax(z, dim=-1) * z).sum(-1)
    return logp, entropy


def chunked_logp_entropy(
    hidden: torch.Tensor, targets: torch.Tensor, head: Head, chunk_size: int = 1024, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`logp_entropy_from_logits(head(hidden), targets)` computed `chunk_size` rows at a time.

    hidden (N, D), targets (N,). Only one (chunk_size, V) logits block exists at a time, in forward and
    (thanks to checkpointing when there is more than one chunk) in backward.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    def one(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logp_entropy_from_logits(head(h), t, temperature)

    logps, ents = [], []
    # one chunk holds everything: checkpointing it would only recompute the same single block
    grad = torch.is_grad_enabled() and hidden.requires_grad and hidden.shape[0] > chunk_size
    for start in range(0, hidden.shape[0], chunk_size):
        h, t = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        lp, en = checkpoint(one, h, t, use_reentrant=False) if grad else one(h, t)
        logps.append(lp)
        ents.append(en)
    if not logps:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(ents)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(softmax(logits / temperature)) in nats, row-wise: (N, V) → (N,), float64 for float64 logits, else float32."""
    z = (logits if logits.dtype == torch.float64 else logits.float()) / temperature
    logp = torch.log_softmax(z, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def first_order_entropy_change(
    logits_before: torch.Tensor, logits_after: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The exact first-order entropy change of each row: −Cov_{a∼π}(log π(a), δz(a)), π = softmax(z_before / T),
    δz = (z_after − z_before) / T. (N, V), (N, V) → (N,), computed in float64 and returned as float64.

    Equals Σ_a −π(a)(log π(a) + H) δz(a) (the centred weights sum to 0, so adding a constant to δz changes
    nothing); the realized change differs from it by O(‖δz‖²)."""
    z = logits_before.double() / temperature
    dz = (logits_after.double() - logits_before.double()) / temperature
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    h = -(p * logp).sum(-1, keepdim=True)
    return -(p * (logp + h) * dz).sum(-1)


def position_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """The full logits (N, V) float32 at every position that predicts a target token (row-major order of
    target_mask[b, j], as `score_tokens` gathers them). Builds (N, V): meant for probes on a few hundred tokens."""
    if target_mask[:, 0].any():
        raise ValueError("target_mask[:, 0] is True, but no position predicts the first token")
    out = model.get_decoder()(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    h = out.last_hidden_state[:, :-1][target_mask[:, 1:]]  # (N, D)
    return output_head(model)(h).float()


@dataclass(frozen=True)
class EmbeddingRows:
    """The rows of the model's input-embedding table that a forward uses, as a small leaf tensor `leaf` (K, D).

    Backward through `F.embedding(ids, W)` builds a dense (V, D) gradient per call: zero-filled, summed with the
    other calls' and accumulated into `W.grad`. At a 50k–150k vocabulary those passes over fresh (V, D) memory
    cost more than the token embeddings' share of the step (GPT-2-small shape: about a fifth of a training step on
    one thread). Embedding through `leaf` gives the same values and a (K, D) gradient; `add_grad` index-adds it into
    `W.grad`, which is what the dense path adds there (rows no token used get exactly 0 either way)."""

    weight: torch.nn.Parameter
    index: torch.Tensor  # (K,) the distinct token ids, ascending
    leaf: torch.Tensor  # (K, D) a copy of those rows, requires grad
    padding_idx: int | None
    scale: torch.Tensor | None = None  # the table's own output scale (Gemma's √D), applied as its forward does

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) → embeddings (..., D), equal to the table's own lookup."""
        out = F.embedding(torch.searchsorted(self.index, ids.contiguous()), self.leaf)
        return out if self.scale is None else out * self.scale.to(self.leaf.dtype)

    @torch.no_grad()
    def add_grad(self, grad: torch.Tensor | None = None) -> None:
        """Add the rows' gradient (`grad`, else `leaf.grad`) into the table's `.grad` (created as zeros if None).
        The padding row gets none, as `nn.Embedding(padding_idx=...)` gives it none."""
        g = self.leaf.grad if grad is None else grad
        if g is None:
            return
        if self.padding_idx is not None:
            g = g.masked_fill((self.index == self.padding_idx)[:, None], 0.0)
        if self.weight.grad is None:
            self.weight.grad = torch.zeros_like(self.weight)
        self.weight.grad.index_add_(0, self.index, g)


def embedding_rows(model: torch.nn.Module, ids: torch.Tensor) -> EmbeddingRows | None:
    """`EmbeddingRows` for the tokens in `ids` when gradients are on and the model's input embedding is an
    `nn.Embedding` lookup whose weight trains (no max_norm, frequency scaling or sparse gradient): a plain one, or
    one that multiplies by its `embed_scale` (Gemma's scaled embeddings), checked on `ids` against the module's
    own output. Else None: the caller keeps the dense path."""
    emb = model.get_input_embeddings()
    if not (torch.is_grad_enabled() and isinstance(emb, torch.nn.Embedding) and emb.weight.requires_grad):
        return None
    if emb.max_norm is not None or emb.scale_grad_by_freq or emb.sparse:
        return None
    index = torch.unique(ids)
    scale = None
    if type(emb).forward is not torch.nn.Embedding.forward:
        scale = getattr(emb, "embed_scale", None)
        if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
            return None
        with torch.no_grad():
            if not torch.equal(emb(ids), F.embedding(ids, emb.weight) * scale.to(emb.weight.dtype)):
                return None
    return EmbeddingRows(emb.weight, index, emb.weight.detach()[index].requires_grad_(), emb.padding_idx, scale)


def _token_inputs(ids: torch.Tensor, rows: EmbeddingRows | None) -> dict[str, torch.Tensor]:
    """The decoder's token argument: `input_ids`, or `inputs_embeds` looked up in `rows`."""
    return {"input_ids": ids} if rows is None else {"inputs_embeds": rows.embed(ids)}


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... counted over attended tokens only (left padding gets position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def score_tokens(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    rows: EmbeddingRows | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(x_j | x_<j) and H(π(· | x_<j)) for every position j with target_mask[b, j] True.

    input_ids, attention_mask, target_mask: (B, S). Returns two (B, S) float32 tensors, zero where
    target_mask is False. target_mask[:, 0] must be False (nothing predicts the first token). `rows`
    (`embedding_rows`): embed through them, so that the embedding's gradient lands on `rows.leaf`.
    """
    if target_mask[:, 0].any():
        raise ValueError("target_mask[:, 0] is True, but no position predicts the first token")
    decoder = model.get_decoder()
    out = decoder(
        **_token_inputs(input_ids, rows),
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    hidden = out.last_hidden_state  # (B, S, D)
    predict = target_mask[:, 1:]  # position j-1 predicts token j
    h = hidden[:, :-1][predict]  # (N, D)
    return _scores_at(model, h, input_ids[:, 1:][predict], target_mask, chunk_size, temperature)


def _scores_at(
    model: torch.nn.Module,
    h: torch.Tensor,
    targets: torch.Tensor,
    target_mask: torch.Tensor,
    chunk_size: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π and H of `targets` (N,) from the states `h` (N, D) that predict them, scattered into (B, S) float32
    tensors at `target_mask`'s N True cells (zero elsewhere)."""
    logp_flat, ent_flat = chunked_logp_entropy(h, targets, output_head(model), chunk_size, temperature)
    logp = torch.zeros(target_mask.shape, dtype=torch.float32, device=target_mask.device)
    entropy = torch.zeros_like(logp)
    return logp.masked_scatter(target_mask, logp_flat), entropy.masked_scatter(target_mask, ent_flat)


def distinct_rows(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, inverse): one row index per distinct (ids, mask) row, and for each row the index of its distinct row
    in `first`. ids, mask: (B, P) → (U,), (B,)."""
    distinct, inverse = torch.unique(torch.cat([ids, mask.to(ids.dtype)], dim=1), dim=0, return_inverse=True)
    first = torch.zeros(len(distinct), dtype=torch.long, device=ids.device)
    first.scatter_(0, inverse, torch.arange(len(ids), device=ids.device))  # any copy: they are equal
    return first, inverse


def cache_argument(module: torch.nn.Module) -> str | None:
    """The name under which `module.forward` takes a KV cache (`cache` in transformers 5, `past_key_values`
    before), or None when it takes none."""
    params = inspect.signature(module.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


# Model types whose decoders are checked (tests/integration/test_rlvr_entropy.py) to give packed rows, under a
# custom 4D mask and explicit positions, the same values and gradients as plain scoring.
PACKABLE_MODEL_TYPES = frozenset({"gpt2", "llama", "qwen2", "gemma", "gemma2", "gemma3_text"})


def packable(model: torch.nn.Module, seq_len: int) -> bool:
    """Whether `score_tokens_shared_prefix` may pack rows of `seq_len` columns: a checked model type, an attention
    implementation that takes a dense 4D mask (sdpa: boolean, eager: additive), and no sliding window that a row
    could reach (the custom mask replaces the sliding layers' own masks)."""
    cfg = model.config
    window = getattr(cfg, "sliding_window", None)
    return (
        cfg.model_type in PACKABLE_MODEL_TYPES
        and getattr(cfg, "_attn_implementation", None) in ("sdpa", "eager")
        and (window is None or window > seq_len)
    )


def layer_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(weights of one decoder layer's matrices, d_model): what the cost of a packed forward depends on."""
    n_layers = model.config.num_hidden_layers
    blocks = next(m for m in model.get_decoder().modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers)
    return sum(w.numel() for w in blocks[0].parameters() if w.dim() >= 2), model.config.hidden_size


def packed_cost(rows: int, width: int, layer_weights: int, d_model: int) -> int:
    """FLOPs per layer of a forward over `rows` packed rows of `width` columns: the matrix products (2 per weight
    and column) and dense attention over every column pair, masked or not (4·d per pair: scores and values)."""
    return rows * width * (2 * layer_weights + 4 * d_model * width)


@dataclass(frozen=True)
class PackedLayout:
    """Rows that share prefixes, packed without padding into R rows of W columns. A packed row holds segments: a
    prefix's attended tokens followed by the attended tokens of some of its rows' continuations (a prefix with
    more continuations than fit in W gets several segments, each with its own copy of the prefix). A continuation
    attends to its segment's prefix and causally to itself; position ids are the original rows'; the columns after
    a packed row's last segment hold a filler token that attends only to itself. Row b's column P + j is predicted
    by the packed state at (source_row[b, j], source_col[b, j]) (0 where column P + j is padding)."""

    ids: torch.Tensor  # (R, W)
    positions: torch.Tensor  # (R, W)
    allowed: torch.Tensor  # (R, 1, W, W) bool: query may attend to key
    source_row: torch.Tensor  # (B, S - P)
    source_col: torch.Tensor  # (B, S - P)


def pack_shared_prefix(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_width: int,
    shape: tuple[int, int],
    distinct: tuple[torch.Tensor, torch.Tensor] | None = None,
    width: int | None = None,
) -> PackedLayout | None:
    """The packed layout (see PackedLayout) of (B, S) rows whose first `prefix_width` columns are shared prompts,
    left-padded, and whose continuations are right-padded; None when a row's attended columns are not one
    contiguous run. Segments fill rows first-fit, largest first, up to a row width chosen to minimise
    `packed_cost` for the model's `shape` (`layer_shape`): wide rows repeat no prompt but pay attention over every
    column pair, narrow ones the reverse, and every row is padded to the widest. `width` fixes the row width
    instead (at least one prompt and one continuation). `distinct`: `distinct_rows` of the prefix columns, when
    already computed."""
    B, S = input_ids.shape
    P, C = prefix_width, S - prefix_width
    dev = input_ids.device
    attn = attention_mask.bool()
    first, inverse = distinct if distinct is not None else distinct_rows(input_ids[:, :P], attention_mask[:, :P])
    n_prefix = attn[first, :P].sum(1).tolist()  # (U,) attended prefix tokens: the last n of the P columns
    n_cont = attn[:, P:].sum(1)  # (B,) attended continuation tokens: the first n of the C columns
    col = torch.arange(S, device=dev)
    runs = torch.cat([col[None, :P] >= P - attn[:, :P].sum(1, keepdim=True), col[None, :C] < n_cont[:, None]], dim=1)
    if not torch.equal(runs, attn) or min(n_prefix) == 0:
        return None
    n_cont = n_cont.tolist()
    groups = _group_rows(inverse, len(first))
    if width is None:
        narrowest = max(n_prefix[u] + n_cont[b] for u, rows_u in enumerate(groups) for b in rows_u)
        widest = sum(n_prefix[u] + sum(n_cont[b] for b in rows_u) for u, rows_u in enumerate(groups))
        candidates = sorted({narrowest, widest, *range(narrowest, widest, max(1, narrowest // 2))})
        plans = [_plan(groups, n_prefix, n_cont, w) for w in candidates]
        segments, placed, R, W = min(plans, key=lambda plan: packed_cost(plan[2], plan[3], *shape))
    else:
        segments, placed, R, W = _plan(groups, n_prefix, n_cont, width)
    ids = torch.full((R, W), int(input_ids[first[0], P - 1]), dtype=input_ids.dtype, device=dev)
    pos = torch.zeros((R, W), dtype=torch.long, device=dev)
    seg_id = torch.full((R, W), -1, dtype=torch.long, device=dev)  # -1: filler
    block = torch.full((R, W), -1, dtype=torch.long, device=dev)  # -1: prefix, b: row b's continuation
    source_row = torch.zeros((B, C), dtype=torch.long, device=dev)
    source_col = torch.zeros((B, C), dtype=torch.long, device=dev)
    for i, ((u, seg), (r, o)) in enumerate(zip(segments, placed)):
        n = n_prefix[u]
        ids[r, o : o + n] = input_ids[first[u], P - n : P]
        pos[r, o : o + n] = torch.arange(n, device=dev)
        seg_id[r, o : o + n] = i
        last, o = o + n - 1, o + n  # the prefix's last token predicts each continuation's first
        for b in seg:
            c = n_cont[b]
            ids[r, o : o + c] = input_ids[b, P : P + c]
            pos[r, o : o + c] = torch.arange(n, n + c, device=dev)
            seg_id[r, o : o + c] = i
            block[r, o : o + c] = b
            source_row[b, :c] = r
            source_col[b, 0] = last
            source_col[b, 1:c] = torch.arange(o, o + c - 1, device=dev)
            o += c
    k = torch.arange(W, device=dev)
    causal = k[:, None] >= k[None, :]  # (W, W)
    same_segment = (seg_id[:, :, None] == seg_id[:, None, :]) & (seg_id[:, None, :] >= 0)  # (R, W, W)
    own_block = (block[:, None, :] == -1) | (block[:, :, None] == block[:, None, :])
    allowed = (causal & same_segment & own_block) | torch.eye(W, dtype=torch.bool, device=dev)
    return PackedLayout(ids, pos, allowed[:, None], source_row, source_col)


def _plan(
    groups: list[list[int]], n_prefix: list[int], n_cont: list[int], width: int
) -> tuple[list[tuple[int, list[int]]], list[tuple[int, int]], int, int]:
    """Segments (distinct prefix, its rows in the segment) of at most `width` tokens (or one prefix and one
    continuation, where that is wider), their places (packed row, first column) first-fit largest first, and the
    packed rows' count and width."""
    segments: list[tuple[int, list[int]]] = []
    for u, rows_u in enumerate(groups):
        seg: list[int] = []
        size = n_prefix[u]
        for b in rows_u:
            if seg and size + n_cont[b] > width:
                segments.append((u, seg))
                seg, size = [], n_prefix[u]
            seg.append(b)
            size += n_cont[b]
        segments.append((u, seg))
    sizes = [n_prefix[u] + sum(n_cont[b] for b in seg) for u, seg in segments]
    cap = max(width, max(sizes))
    fill: list[int] = []
    placed: list[tuple[int, int]] = [(0, 0)] * len(segments)
    for i in sorted(range(len(segments)), key=lambda i: -sizes[i]):
        r = next((r for r, f in enumerate(fill) if f + sizes[i] <= cap), len(fill))
        if r == len(fill):
            fill.append(0)
        placed[i] = (r, fill[r])
        fill[r] += sizes[i]
    return segments, placed, len(fill), max(fill)


def _group_rows(inverse: torch.Tensor, n: int) -> list[list[int]]:
    """For each of `n` distinct values, the rows of `inverse` that hold it, in row order."""
    groups: list[list[int]] = [[] for _ in range(n)]
    for b, u in enumerate(inverse.tolist()):
        groups[u].append(b)
    return groups


def score_tokens_shared_prefix(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    prefix_width: int,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    rows: EmbeddingRows | None = None,
    pack: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`score_tokens` for rows whose targets all lie after the first `prefix_width` columns, with each distinct
    prefix (ids and mask of those columns: a GRPO group's prompt) run once.

    Packed (`packable`): one decoder call on rows that hold each prefix once and its continuations after it, without
    padding, under a block mask (`pack_shared_prefix`), so each weight's gradient is one product. Otherwise the
    decoder runs the U distinct prefixes with a KV cache, the cache's rows are copied to the B rows (an indexing
    op, so gradients flow back to the shared prefix), and the B continuations run on it. Either way the prefix
    tokens of a group of G completions cost one forward instead of G. Same values as `score_tokens` up to float
    rounding (the matrix products see other shapes). A decoder that takes no KV cache and cannot be packed is
    scored by `score_tokens`. `rows`: as in `score_tokens`. `pack`: False takes the KV-cache path even where packing
    applies.
    """
    if not 0 < prefix_width < input_ids.shape[1]:
        raise ValueError(f"prefix_width={prefix_width} must be between 1 and the sequence length - 1")
    if target_mask[:, :prefix_width].any():
        raise ValueError("target_mask is True inside the shared prefix; score these rows with score_tokens")
    decoder = model.get_decoder()
    first, inverse = distinct_rows(input_ids[:, :prefix_width], attention_mask[:, :prefix_width])
    if pack and packable(model, input_ids.shape[1]):
        layout = pack_shared_prefix(input_ids, attention_mask, prefix_width, layer_shape(model), (first, inverse))
        if layout is not None:
            return _score_packed(model, decoder, layout, input_ids, target_mask, prefix_width, chunk_size,
                                 temperature, rows)  # fmt: skip
    cache_name = cache_argument(decoder)
    if cache_name is None:
        return score_tokens(model, input_ids, attention_mask, target_mask, chunk_size, temperature, rows)
    from transformers import DynamicCache

    positions = position_ids_from_mask(attention_mask)
    cache = DynamicCache(config=model.config)
    prefix = decoder(
        **_token_inputs(input_ids[first, :prefix_width], rows),
        attention_mask=attention_mask[first, :prefix_width],
        position_ids=positions[first, :prefix_width],
        use_cache=True,
        **{cache_name: cache},
    ).last_hidden_state  # (U, P, D)
    cache.batch_select_indices(inverse)  # (U, ..., P, hd) → (B, ..., P, hd) in every layer
    rest = decoder(
        **_token_inputs(input_ids[:, prefix_width:], rows),
        attention_mask=attention_mask,
        position_ids=positions[:, prefix_width:],
        use_cache=True,
        **{cache_name: cache},
    ).last_hidden_state  # (B, S - P, D)
    # position j - 1 predicts token j: the prefix's last position predicts the first continuation token
    hidden = torch.cat([prefix[inverse, -1:], rest[:, :-1]], dim=1)  # (B, S - P, D)
    return _scatter_scores(model, hidden, input_ids, target_mask, prefix_width, chunk_size, temperature)


def _score_packed(
    model: torch.nn.Module,
    decoder: torch.nn.Module,
    layout: PackedLayout,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    prefix_width: int,
    chunk_size: int,
    temperature: float,
    rows: EmbeddingRows | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    mask = dense_attention_mask(model, layout.allowed)
    inputs = _token_inputs(layout.ids, rows)
    out = decoder(**inputs, attention_mask=mask, position_ids=layout.positions, use_cache=False)
    hidden = out.last_hidden_state[layout.source_row, layout.source_col]  # (R, W, D) → (B, S - P, D)
    return _scatter_scores(model, hidden, input_ids, target_mask, prefix_width, chunk_size, temperature)


def _scatter_scores(
    model: torch.nn.Module,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    prefix_width: int,
    chunk_size: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π and H (B, S) from `hidden` (B, S - P, D): the states that predict columns P.. of each row."""
    predict = target_mask[:, prefix_width:]
    targets = input_ids[:, prefix_width:][predict]  # (N,)
    return _scores_at(model, hidden[predict], targets, target_mask, chunk_size, temperature)


@torch.no_grad()
def check_head_matches_forward(model: torch.nn.Module, input_ids: torch.Tensor, atol: float = 1e-4) -> float:
    """Max |log π| difference between `score_tokens` and the model's own full forward on `input_ids`;
    raises when it exceeds `atol` (an HF family with a post-head transform `output_head` does not know)."""
    mask = torch.ones_like(input_ids, dtype=torch.bool)
    target = mask.clone()
    target[:, 0] = False
    logp, _ = score_tokens(model, input_ids, mask.long(), target, chunk_size=7)
    logits = model(input_ids=input_ids).logits.float()  # (B, S, V), small check input only
    ref = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    err = (logp[:, 1:] - ref).abs().max().item()
    if not err <= atol:
        raise ValueError(
            f"chunked scoring differs from {type(model).__name__}.forward by {err:.2e} in log-prob; this model "
            "applies a transform after its output head that posttrain_probe.rlvr.entropy.output_head lacks"
        )
    return err


# ------------------------------------------------------------------------------------------ predictors


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over mask (0 when the mask is empty)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def centred_cov(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cov_i = (log π_i − mean log π)(A_i − mean A), means over the valid tokens; 0 elsewhere. (B, T)."""
    logp, adv = logp.detach().float(), adv.float()
    cov = (logp - masked_mean(logp, mask)) * (adv - masked_mean(adv, mask))
    return cov * mask.to(cov.dtype)


def steer_omega(
    adv: torch.Tensor, logp_new: torch.Tensor, logp_old: torch.Tensor, entropy_old: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """STEER's Ω_i = (A_i / π_old,i) · p_i (1 − p_i) (ln p_i + H_i), 0 on invalid tokens. (B, T)."""
    logp_new = logp_new.detach().float()
    p = logp_new.exp()
    omega = adv.float() * torch.exp(-logp_old.float()) * p * (1 - p) * (logp_new + entropy_old.float())
    return omega * mask.to(omega.dtype)


def predicted_entropy_change(per_token: torch.Tensor, mask: torch.Tensor) -> float:
    """−mean of a per-token predictor (Cov or Ω) over valid tokens: the step's predicted ΔH (up to η)."""
    return -float(masked_mean(per_token.float(), mask))
