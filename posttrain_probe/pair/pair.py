"""A base model and its post-trained twin, parity-checked, run on identical token ids."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .loading import HookedModel, load_model
from .parity import ParityReport, check_parity


@dataclass
class ModelPair:
    base: HookedModel
    post: HookedModel
    parity: ParityReport

    @property
    def tokenizer(self):
        """The base tokenizer: both models are always fed the ids it produces."""
        return self.base.tokenizer

    def models(self) -> dict[str, HookedModel]:
        return {"base": self.base, "post": self.post}

    def encode(
        self, texts: Sequence[str], padding_side: str = "left", add_special_tokens: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (B, T) for both models. On the toy world's word-level tokenizer, text
        with words it does not know raises `UnknownWordsError` naming them (instead of silent `<unk>` ids)."""
        from ..toyworld.tokenizer import check_known_words, is_toy_tokenizer

        if is_toy_tokenizer(self.tokenizer):
            check_known_words(self.tokenizer, [texts] if isinstance(texts, str) else texts)
        return encode(self.tokenizer, texts, padding_side, add_special_tokens)

    def provenance(self) -> dict[str, Any]:
        return {"base": self.base.provenance, "post": self.post.provenance, "parity": self.parity.as_dict()}


def encode(
    tokenizer, texts: Sequence[str], padding_side: str = "left", add_special_tokens: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize a batch with explicit padding side; returns (input_ids, attention_mask), both (B, T)."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise ValueError("no texts to encode; pass at least one prompt")
    old = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = old
    return enc["input_ids"], enc["attention_mask"]


def load_pair(
    base: str | os.PathLike,
    post: str | os.PathLike,
    backend: str = "nnsight",
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    check: bool = True,
    trust_remote_code: bool = False,
    remote: bool = False,
    base_revision: str | None = None,
    post_revision: str | None = None,
) -> ModelPair:
    """Load `base` and `post` (hub ids, local HF dirs, or `toyworld:base` / `toyworld:post`).

    Raises `PairMismatchError` naming every difference unless `check=False`. Both backends give the same reads
    and interventions; prefer "nnsight" for anything that generates: TransformerLens 4.3's bridge swaps the HF
    modules in place and its attention does not fill HF's KV cache, so `hf.generate` on a bridged model is wrong.
    """
    kw = dict(backend=backend, dtype=dtype, device=device, trust_remote_code=trust_remote_code, remote=remote)
    b = load_model(base, revision=base_revision, **kw)
    p = load_model(post, revision=post_revision, **kw)
    report = check_parity(b, p)
    if check and not report.ok:
        raise report.error()
    return ModelPair(b, p, report)
