"""Hugging Face helpers shared by the loaders, the trainer and the checkpoint writer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def no_hf_progress_bars() -> Iterator[None]:
    """transformers' per-call "Loading weights" / "Writing model shards" bars off for the block (our own progress
    reporting says what is loaded or saved; those bars repeat through logs and notebooks), restored after."""
    from transformers.utils import logging as hf_logging

    were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if were_on:
            hf_logging.enable_progress_bar()


def dense_attention_mask(model, allowed):
    """A (B, 1, Tq, Tk) boolean "query may attend to key" mask in the form the model's attention takes as a custom
    4D `attention_mask`: as is for sdpa (boolean), additive (0 / the dtype's minimum) for eager attention."""
    import torch

    if getattr(model.config, "_attn_implementation", None) != "eager":
        return allowed
    dtype = torch.float32
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
