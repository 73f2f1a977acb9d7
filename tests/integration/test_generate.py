"""Greedy generation through HookedModel.run: identical tokens to HF greedy `generate` (left padding, both
backends, with and without a working KV cache), EOS handling, interventions on every step."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.pair import Add, load_model
from posttrain_probe.pair.generate import greedy_generate, position_ids_from_mask
from posttrain_probe.pair.pair import encode
from posttrain_probe.testing import make_tiny_checkpoint

PROMPTS = ["the city of", "how do I make bread the river is", "User : a"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    return {f: make_tiny_checkpoint(f, root / f, seed=1) for f in ("llama", "gpt2")}


@pytest.fixture(scope="module")
def reference(ckpts):
    """Freshly loaded HF models (a backend may have swapped modules of its own copy)."""
    return {f: AutoModelForCausalLM.from_pretrained(p, attn_implementation="eager").eval() for f, p in ckpts.items()}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("backend", ["bridge", "nnsight"])
def test_tokens_equal_hf_greedy_generate(ckpts, reference, family, backend):
    m = load_model(ckpts[family], backend=backend)
    ids, mask = encode(m.tokenizer, PROMPTS, padding_side="left")
    assert (mask == 0).any(), "the prompts must need left padding for this test to mean something"
    ours = greedy_generate(m, ids, mask, max_new_tokens=10)
    hf = reference[family].generate(
        ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=m.tokenizer.pad_token_id
    )[:, ids.shape[1] :]
    assert torch.equal(ours.tokens, hf)
    no_cache = greedy_generate(m, ids, mask, max_new_tokens=10, use_kv_cache=False)
    assert torch.equal(no_cache.tokens, hf) and not no_cache.used_kv_cache
    assert ours.first_logits.shape == (len(PROMPTS), m.arch.vocab_size)
    assert torch.allclose(ours.first_logits, m.run(ids, mask).logits[:, -1].float(), atol=1e-5)


def test_eos_stops_rows_and_pads_like_hf(ckpts, reference):
    m = load_model(ckpts["llama"], backend="nnsight")
    ids, mask = encode(m.tokenizer, PROMPTS, padding_side="left")
    free = greedy_generate(m, ids, mask, max_new_tokens=6, eos_token_id=[])
    eos = int(free.tokens[0, 1])  # row 0 ends at step 2
    ours = greedy_generate(m, ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=1)
    hf = reference["llama"].generate(
        ids, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=eos, pad_token_id=1
    )[:, ids.shape[1] :]
    assert torch.equal(ours.tokens[:, : hf.shape[1]], hf)
    assert bool(ours.finished[0]) and ours.tokens[0, 2:].eq(1).all()


def test_interventions_act_on_every_step_and_must_be_position_free(ckpts):
    m = load_model(ckpts["llama"], backend="bridge")
    ids, mask = encode(m.tokenizer, PROMPTS, padding_side="left")
    push = Add("resid_pre.1", vector=torch.randn(m.d_model, generator=torch.Generator().manual_seed(0)), scale=8.0)
    plain = greedy_generate(m, ids, mask, max_new_tokens=6, eos_token_id=[])
    steered = greedy_generate(m, ids, mask, max_new_tokens=6, interventions=[push], eos_token_id=[])
    assert not torch.equal(plain.tokens, steered.tokens)
    assert len(steered.receipts[0]) == 6  # one receipt per forward
    manual = ids
    manual_mask = mask
    for _ in range(6):  # the same thing without any cache: full recompute with the intervention
        pos = position_ids_from_mask(manual_mask)
        nxt = m.run(manual, manual_mask, interventions=[push], position_ids=pos).logits[:, -1].argmax(-1)
        manual = torch.cat([manual, nxt[:, None]], 1)
        manual_mask = torch.cat([manual_mask, torch.ones_like(nxt[:, None])], 1)
    assert torch.equal(manual[:, ids.shape[1] :], steered.tokens)
    with pytest.raises(ValueError, match="position-agnostic"):
        greedy_generate(m, ids, mask, interventions=[Add("resid_pre.1", vector=push.vector, positions=[-1])])
    with pytest.raises(ValueError, match="right-padded"):
        right_ids, right_mask = encode(m.tokenizer, PROMPTS, padding_side="right")
        greedy_generate(m, right_ids, right_mask)
    with pytest.raises(ValueError, match="context"):
        greedy_generate(m, ids, mask, max_new_tokens=1000)
