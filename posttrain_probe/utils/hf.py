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
