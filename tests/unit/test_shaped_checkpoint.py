"""`make_shaped_checkpoint`: a real model's width, heads and vocabulary, with a word-level tokenizer of that size."""

from __future__ import annotations

import pytest

from posttrain_probe.testing import SHAPES, make_shaped_checkpoint


def test_gpt2_small_shape_with_one_layer(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    path = make_shaped_checkpoint("gpt2-small", tmp_path / "m", n_layers=1)
    cfg, tok = AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.n_inner, cfg.num_hidden_layers) == (768, 12, 3072, 1)
    assert cfg.vocab_size == len(tok) == SHAPES["gpt2-small"]["vocab_size"] == 50257
    assert tok.convert_ids_to_tokens(tok("User : 1 2")["input_ids"]) == ["User", ":", "1", "2"]


def test_unknown_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gpt2-small"):
        make_shaped_checkpoint("gpt5", tmp_path)
