"""Model-running pieces of the refusal analysis: prompt formatting, post-instruction positions, candidate
activations, batched last-position logits and greedy generations under interventions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from posttrain_probe.data import Instruction
from posttrain_probe.pair import HookedModel, Intervention, format_instruction, resolve_format
from posttrain_probe.pair.generate import greedy_generate
from posttrain_probe.pair.pair import encode


@dataclass
class Prompts:
    """One model's formatted prompts for a list of instructions, left-padded token ids (B, T)."""

    fmt: str
    texts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)


def _adds_bos(tokenizer, text: str) -> bool:
    """Encode with special tokens unless the rendered text already starts with the BOS string."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def format_prompts(
    model: HookedModel, role: str, instructions: Sequence[Instruction], fmt: str, base_template: str
) -> Prompts:
    """Render `instructions` in `model`'s format (`fmt`: auto|base|chat|raw; auto = base for the base model,
    the chat template for the post model if it has one) and tokenize them left-padded."""
    tok = model.tokenizer
    resolved = resolve_format(fmt, tok, role)
    texts = [format_instruction(x.text, resolved, tok, base_template) for x in instructions]
    ids, mask = encode(tok, texts, padding_side="left", add_special_tokens=_adds_bos(tok, texts[0]))
    return Prompts(resolved, texts, ids, mask)


def post_instruction_tokens(
    model: HookedModel, role: str, instructions: Sequence[Instruction], fmt: str, base_template: str
) -> list[str]:
    """The template tokens after the instruction (e.g. ['\\n', 'Assistant', ':']), shared by every prompt.

    Counted as len(tokens(prompt)) − len(tokens(prompt cut right after the instruction)); the minimum over
    prompts is used, so a tokenizer that merges across the boundary cannot push a position into the
    instruction."""
    tok = model.tokenizer
    resolved = resolve_format(fmt, tok, role)
    counts, tail = [], None
    for x in instructions:
        text = format_instruction(x.text, resolved, tok, base_template)
        cut = text.rfind(x.text)
        if cut < 0:
            raise ValueError(f"the {resolved} template does not contain the instruction verbatim: {text!r}")
        special = _adds_bos(tok, text)
        full = tok(text, add_special_tokens=special)["input_ids"]
        head = tok(text[: cut + len(x.text)], add_special_tokens=special)["input_ids"]
        counts.append(len(full) - len(head))
        tail = full
    n = min(counts)
    if n < 1:
        raise ValueError(
            f"the {resolved} template puts no tokens after the instruction; use a template with an assistant "
            "turn marker (e.g. 'User: {instruction}\\nAssistant:')"
        )
    return tok.convert_ids_to_tokens(tail[-n:])


@torch.no_grad()
def candidate_activations(model: HookedModel, prompts: Prompts, n_post: int, batch_size: int) -> torch.Tensor:
    """resid_pre of every layer at the last `n_post` positions: (N, L, P, D) float32 on CPU."""
    sites = [f"resid_pre.{l}" for l in range(model.n_layers)]
    chunks = []
    for i in range(0, len(prompts), batch_size):
        sl = slice(i, i + batch_size)
        out = model.run(prompts.input_ids[sl], prompts.attention_mask[sl], read=sites)
        acts = torch.stack([out.cache[s][:, -n_post:].float().cpu() for s in sites], dim=1)  # (B, L, P, D)
        chunks.append(acts)
    return torch.cat(chunks)


@torch.no_grad()
def last_logits(
    model: HookedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    batch_size: int,
    make_interventions: Callable[[slice], list[Intervention]] | None = None,
) -> torch.Tensor:
    """Next-token logits at the last prompt position (B, V), float32 on CPU, in chunks of `batch_size`
    rows; `make_interventions(rows)` gives the interventions for those rows of the chunk."""
    out = []
    for i in range(0, input_ids.shape[0], batch_size):
        sl = slice(i, min(i + batch_size, input_ids.shape[0]))
        ivs = make_interventions(sl) if make_interventions is not None else []
        res = model.run(input_ids[sl], attention_mask[sl], interventions=ivs)
        out.append(res.logits[:, -1].float().cpu())
    return torch.cat(out)


@torch.no_grad()
def generate_batched(
    model: HookedModel,
    prompts: Prompts,
    interventions: Sequence[Intervention],
    max_new_tokens: int,
    batch_size: int,
) -> tuple[list[str], torch.Tensor]:
    """Greedy completions (texts) and the logits at the first response position (B, V) for all prompts."""
    texts, first = [], []
    for i in range(0, len(prompts), batch_size):
        sl = slice(i, i + batch_size)
        g = greedy_generate(
            model,
            prompts.input_ids[sl],
            prompts.attention_mask[sl],
            max_new_tokens=max_new_tokens,
            interventions=interventions,
        )
        texts += g.texts
        first.append(g.first_logits)
    return texts, torch.cat(first)
