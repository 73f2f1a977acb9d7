"""Token bookkeeping for knowledge localization: subject spans by offset alignment, answer tokens, and
ROME's token classes.

A span is found from the fast tokenizer's character offsets, never by re-tokenizing the substring (BPE
merges across a word boundary would shift it). A subject that no token run covers exactly raises
`SubjectNotFoundError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# ROME's summary classes (Meng et al. 2022, Fig. 2 / causal_trace averages), in plot order.
TOKEN_CLASSES = (
    "first_subject",
    "middle_subject",
    "last_subject",
    "first_subsequent",
    "further",
    "last",
)


class SubjectNotFoundError(ValueError):
    """The subject (or another span) does not occur in the tokenized prompt on token boundaries."""


def encode_offsets(tokenizer, text: str, add_special_tokens: bool = True) -> tuple[list[int], list[tuple]]:
    """Token ids and (start, end) character offsets of `text` (special tokens get (0, 0))."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "subject spans need a fast tokenizer (character offsets); load the model's tokenizer.json "
            "(AutoTokenizer with use_fast=True)"
        )
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def char_span_to_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """The token range [a, b) whose characters overlap [start, end), or None when no token overlaps.

    Tokens with empty offsets (BOS and other specials the tokenizer adds) never count. A token that straddles
    a span edge (e.g. " Paris" with its leading space for BPE) is included: it carries the span's characters.
    """
    hits = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
    if not hits:
        return None
    return hits[0], hits[-1] + 1


def find_token_span(
    tokenizer,
    text: str,
    substring: str,
    add_special_tokens: bool = True,
    char_start: int | None = None,
    what: str = "subject",
) -> tuple[int, int]:
    """[start, end) token positions of the first occurrence of `substring` in `text` (or the one at
    `char_start`), aligned through the tokenizer's offsets. Raises `SubjectNotFoundError`."""
    at = text.find(substring) if char_start is None else char_start
    if not substring or at < 0 or text[at : at + len(substring)] != substring:
        raise SubjectNotFoundError(
            f"{what} {substring!r} does not occur in the prompt {text!r}; fix the record so the {what} is a "
            "substring of the prompt"
        )
    _, offsets = encode_offsets(tokenizer, text, add_special_tokens)
    span = char_span_to_tokens(offsets, at, at + len(substring))
    if span is None:
        raise SubjectNotFoundError(
            f"{what} {substring!r} is in the prompt {text!r} but no token covers it (the tokenizer maps it "
            "to nothing); check the tokenizer or the record"
        )
    return span


def answer_token(tokenizer, prompt: str, answer: str, add_special_tokens: bool = True) -> tuple[int, bool]:
    """The first token of `answer` as the model must produce it right after `prompt`.

    Tokenizes prompt + answer and takes the first token past the prompt's tokens when the prompt's ids are
    a prefix of the joint ids (they are for word-level and most BPE tokenizers); otherwise the first token
    of `answer` alone. Returns (token id, whether the prefix rule applied)."""
    p_ids = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    j_ids = tokenizer(prompt + answer, add_special_tokens=add_special_tokens)["input_ids"]
    if len(j_ids) > len(p_ids) and j_ids[: len(p_ids)] == p_ids:
        return int(j_ids[len(p_ids)]), True
    alone = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not alone:
        raise ValueError(f"the answer {answer!r} encodes to no tokens; fix the record")
    return int(alone[0]), False


def token_class_masks(n_tokens: int, subj_start: int, subj_end: int) -> torch.Tensor:
    """(6, T) bool: which positions belong to each ROME token class.

    first/last subject token (the same position for a one-token subject), middle subject tokens (strictly
    between them; empty for subjects of ≤ 2 tokens), the first token after the subject, further tokens
    (after that and before the last token) and the last token. A position may sit in two classes (e.g. the
    first subsequent token is also the last token when only one follows the subject); tokens before the
    subject belong to none.
    """
    if not 0 <= subj_start < subj_end <= n_tokens:
        raise ValueError(f"subject span [{subj_start}, {subj_end}) is not inside a prompt of {n_tokens} tokens")
    m = torch.zeros(len(TOKEN_CLASSES), n_tokens, dtype=torch.bool)
    m[0, subj_start] = True
    m[1, subj_start + 1 : subj_end - 1] = True
    m[2, subj_end - 1] = True
    if subj_end < n_tokens:
        m[3, subj_end] = True
    m[4, subj_end + 1 : n_tokens - 1] = True
    m[5, n_tokens - 1] = True
    return m
