"""Model-facing half of the truthfulness analysis: last-statement-token activations at every layer, the
rendering of the few-shot TRUE/FALSE prompt (built by `posttrain_probe.pair.prompts.FewShotPrompt`, shared
with the patching analysis), and P(TRUE) − P(FALSE) under a δ added over a layer band.

Layer index convention (SPEC notation): layer l in 0..L is resid[l], the residual entering block l
(`resid_pre.{l}`); layer L is the stream after the last block (`resid_post.{L-1}`), before the final norm.
Batches are right-padded and positions are gathered per row, so a padded batch gives the same numbers as
one statement at a time (causal attention never looks at the padding after a row's last token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from posttrain_probe.pair import Add, HookedModel, format_instruction
from posttrain_probe.pair.prompts import FewShotPrompt
from posttrain_probe.probes.truth.config import PROMPT_FORMATS  # noqa: E402  (one definition, in config)
from posttrain_probe.probes.truth.fit import prob_diff

FewShotFormat = FewShotPrompt  # the name this module exported before the prompt moved to pair.prompts


def layer_sites(n_layers: int) -> list[str]:
    """The L+1 residual sites resid[0..L]: `resid_pre.0..L-1` then `resid_post.{L-1}`."""
    return [f"resid_pre.{l}" for l in range(n_layers)] + [f"resid_post.{n_layers - 1}"]


def site_for_layer(layer: int, n_layers: int) -> str:
    """The canonical site of resid[layer] (0 ≤ layer ≤ L)."""
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer {layer} out of range: resid layers are 0..{n_layers} for {n_layers} blocks")
    return f"resid_pre.{layer}" if layer < n_layers else f"resid_post.{n_layers - 1}"


def answer_token_ids(tokenizer, true_text: str = " TRUE", false_text: str = " FALSE") -> dict:
    """First token ids of the TRUE / FALSE answers (what the metric reads), with their token strings and
    whether each answer is a single token."""
    out = {}
    for key, text in (("true", true_text), ("false", false_text)):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise ValueError(f"the answer {text!r} encodes to no tokens; choose another answer text")
        if ids[0] == getattr(tokenizer, "unk_token_id", None):
            raise ValueError(f"the answer {text!r} is an unknown token for this tokenizer; pass another label")
        out[key] = {
            "text": text,
            "id": int(ids[0]),
            "token": tokenizer.convert_ids_to_tokens(int(ids[0])),
            "single_token": len(ids) == 1,
        }
    if out["true"]["id"] == out["false"]["id"]:
        raise ValueError(
            f"{true_text!r} and {false_text!r} start with the same token; choose answers whose first tokens differ"
        )
    return out


def _encode(tokenizer, texts: Sequence[str], add_special_tokens: bool, offsets: bool):
    old = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        return tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            add_special_tokens=add_special_tokens,
            return_offsets_mapping=offsets,
        )
    finally:
        tokenizer.padding_side = old


def encode_with_spans(
    tokenizer,
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    n_last: int = 1,
    add_special_tokens: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask) and the positions (B, n_last) of the last `n_last` tokens
    that overlap each text's character span [start, end) (e.g. the statement inside a prompt)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("the truth analysis needs a fast tokenizer (offset mapping); load one with use_fast")
    enc = _encode(tokenizer, texts, add_special_tokens, offsets=True)
    ids, mask, offs = enc["input_ids"], enc["attention_mask"], enc["offset_mapping"]
    positions = torch.zeros(len(texts), n_last, dtype=torch.long)
    for i, (s0, s1) in enumerate(spans):
        start, end = offs[i, :, 0], offs[i, :, 1]
        inside = (mask[i] == 1) & (end > start) & (start < s1) & (end > s0)
        idx = inside.nonzero().flatten()
        if len(idx) < n_last:
            raise ValueError(
                f"text {i} ({texts[i][s0:s1]!r}) has {len(idx)} tokens in its statement span, need {n_last}; "
                "use longer statements"
            )
        positions[i] = idx[-n_last:]
    return ids, mask, positions


def _length_order(tokenizer, texts: Sequence[str], add_special_tokens: bool) -> np.ndarray:
    lens = [len(x) for x in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]
    return np.argsort(lens, kind="stable")


def check_prompt_lengths(model: HookedModel, n_tokens: int, what: str) -> None:
    """Refuse prompts longer than the model's position table (`max_position_embeddings`)."""
    limit = getattr(model.hf.config, "max_position_embeddings", None)
    if limit is not None and n_tokens > limit:
        raise ValueError(
            f"{what} is {n_tokens} tokens, longer than the model's {limit} positions; "
            "use fewer few-shot examples (n_shots) or shorter statements"
        )


def max_token_length(tokenizer, texts: Sequence[str], add_special_tokens: bool = True) -> int:
    return max(
        (len(x) for x in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]),
        default=0,
    )


@torch.no_grad()
def collect_last_token_acts(
    model: HookedModel,
    texts: Sequence[str],
    batch_size: int = 32,
    add_special_tokens: bool = True,
    progress: bool = True,
    desc: str = "activations",
    tokenizer=None,
) -> torch.Tensor:
    """Residual at the last token of each text, for every layer resid[0..L]: (N, L+1, D) float32 (CPU).
    `tokenizer` defaults to the model's; pass the pair's so both models see byte-identical ids."""
    tok = tokenizer or model.tokenizer
    sites = layer_sites(model.n_layers)
    out = torch.empty(len(texts), len(sites), model.d_model, dtype=torch.float32)
    order = _length_order(tok, texts, add_special_tokens)
    for b in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        rows = order[b : b + batch_size]
        batch = [texts[i] for i in rows]
        ids, mask, pos = encode_with_spans(tok, batch, [(0, len(t)) for t in batch], 1, add_special_tokens)
        check_prompt_lengths(model, ids.shape[1], "a statement")
        cache = model.run(ids, mask, read=sites).cache
        r = torch.arange(len(batch))
        stacked = torch.stack([cache[s][r, pos[:, 0].to(cache[s].device)] for s in sites], 1)  # (B, L+1, D)
        out[torch.as_tensor(rows)] = stacked.float().cpu()
    return out


def render_prompt(content: str, span: tuple[int, int], fmt: str, tokenizer) -> tuple[str, tuple[int, int], bool]:
    """The text a model sees for `content` under `fmt` ('raw': as is; 'chat': the tokenizer's chat template as
    a user turn), the statement span inside it, and whether the tokenizer should add special tokens."""
    if fmt not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    if fmt == "raw":
        return content, span, True
    text = format_instruction(content, "chat", tokenizer)
    at = text.rfind(content)
    if at < 0:
        raise ValueError("the chat template changed the prompt text; use prompt format 'raw' for this model")
    return text, (span[0] + at, span[1] + at), False


@torch.no_grad()
def prob_diff_under_addition(
    model: HookedModel,
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    signs: Sequence[float],
    delta: torch.Tensor | None,
    layers: Sequence[int],
    true_id: int,
    false_id: int,
    scale: float = 1.0,
    add_special_tokens: bool = True,
    batch_size: int = 16,
    n_last: int = 2,
    progress: bool = True,
    desc: str = "intervention",
    tokenizer=None,
) -> tuple[np.ndarray, int]:
    """P(TRUE) − P(FALSE) at each prompt's last token with `scale · sign_i · δ` added to resid[l] for every l
    in `layers`, at the last `n_last` statement tokens (δ None: no intervention). Returns (pd (N,), cells
    touched, summed over the receipts). `tokenizer` defaults to the model's."""
    tok = tokenizer or model.tokenizer
    signs_t = torch.as_tensor(list(signs), dtype=torch.float32)
    if len(signs_t) != len(texts):
        raise ValueError(f"{len(signs_t)} signs for {len(texts)} prompts; give one sign per prompt")
    pd = np.empty(len(texts), dtype=np.float64)
    cells = 0
    order = _length_order(tok, texts, add_special_tokens)
    for b in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        rows = order[b : b + batch_size]
        ids, mask, pos = encode_with_spans(
            tok, [texts[i] for i in rows], [spans[i] for i in rows], n_last, add_special_tokens
        )
        check_prompt_lengths(model, ids.shape[1], "a few-shot prompt")
        ivs = []
        if delta is not None:
            vec = signs_t[torch.as_tensor(rows)][:, None, None] * delta.float()[None, None, :]  # (R, 1, D)
            ivs = [Add(site_for_layer(l, model.n_layers), vector=vec, scale=scale, positions=pos) for l in layers]
        out = model.run(ids, mask, interventions=ivs)
        cells += sum(r.n_cells for rec in out.receipts for r in rec)
        last = mask.sum(1) - 1
        logits = out.logits[torch.arange(len(rows)), last.to(out.logits.device)]  # (R, V)
        pd[rows] = prob_diff(logits, true_id, false_id).double().cpu().numpy()
    return pd, cells


__all__ = [
    "PROMPT_FORMATS",
    "FewShotFormat",
    "answer_token_ids",
    "check_prompt_lengths",
    "collect_last_token_acts",
    "encode_with_spans",
    "layer_sites",
    "max_token_length",
    "prob_diff_under_addition",
    "render_prompt",
    "site_for_layer",
]
