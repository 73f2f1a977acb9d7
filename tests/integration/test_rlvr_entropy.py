"""Token scoring on tiny models of three architectures equals the HF forward with left padding; the shared-prefix
scorer equals the plain one (values and gradients) on every family, sliding-window attention included."""

from __future__ import annotations

import pytest
import torch

from posttrain_probe.rlvr.entropy import (
    check_head_matches_forward,
    embedding_rows,
    score_tokens,
    score_tokens_shared_prefix,
)


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma2"])
def tiny_model(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from posttrain_probe.testing import make_tiny_checkpoint

    path = make_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param))
    model = AutoModelForCausalLM.from_pretrained(path)
    return model.eval()


def test_score_tokens_equals_the_hf_forward_with_left_padding(tiny_model):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 60, (3, 9), generator=g)
    attn = torch.ones_like(ids)
    attn[1, :2] = 0  # left padding
    ids[1, :2] = 1
    target = attn.bool().clone()
    target[:, :4] = False  # score the last 5 tokens only
    logp, ent = score_tokens(tiny_model, ids, attn, target, chunk_size=4)
    assert (logp[~target] == 0).all() and (ent[~target] == 0).all()
    for b in range(3):
        start = int((attn[b] == 0).sum())
        row = ids[b : b + 1, start:]
        with torch.no_grad():
            logits = tiny_model(input_ids=row).logits[0].float()  # (S, V)
        ref = torch.log_softmax(logits[:-1], -1)
        ref_logp = ref.gather(-1, row[0, 1:, None]).squeeze(-1)
        ref_ent = -(ref.exp() * ref).sum(-1)
        assert torch.allclose(logp[b, 4:], ref_logp[3 - start :], atol=1e-4)
        assert torch.allclose(ent[b, 4:], ref_ent[3 - start :], atol=1e-4)
    assert check_head_matches_forward(tiny_model, ids[:1]) < 1e-4


def _grouped_batch(vocab: int, prompt_len: int, response_len: int, seed: int = 0):
    """3 distinct prompts (two left-padded) × 4 completions (two right-padded): ids, attn, target (B, P + R)."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(5, vocab, (3, prompt_len), generator=g)
    pmask = torch.ones_like(prompts)
    pmask[0, :2] = 0
    pmask[1, :1] = 0
    prompts[pmask == 0] = 1
    ids = torch.cat([prompts.repeat_interleave(4, 0), torch.randint(5, vocab, (12, response_len), generator=g)], 1)
    attn = torch.cat([pmask.repeat_interleave(4, 0), torch.ones(12, response_len, dtype=torch.long)], 1)
    attn[3, -2:] = 0  # finished early: right padding
    attn[5, -1:] = 0
    target = torch.zeros_like(attn, dtype=torch.bool)
    target[:, prompt_len:] = attn[:, prompt_len:].bool()
    return ids, attn, target


def _scores_and_grads(model, fn, *args):
    model.zero_grad(set_to_none=True)
    logp, ent = fn(model, *args)
    (logp.sum() + 0.5 * ent.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), ent.detach(), grads


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "gemma", "gemma2", "gemma3"])
def test_shared_prefix_scoring_equals_plain_scoring_with_gradients(family, tmp_path):
    from transformers import AutoModelForCausalLM

    from posttrain_probe.testing import make_tiny_checkpoint, tiny_config, tiny_tokenizer

    if family in ("gemma2", "gemma3"):  # a window shorter than the sequences, so the sliding layers truncate
        cfg = tiny_config(family, len(tiny_tokenizer()))
        cfg.sliding_window = 4
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg)
    else:
        model = AutoModelForCausalLM.from_pretrained(make_tiny_checkpoint(family, tmp_path / family))
    model.eval()
    ids, attn, target = _grouped_batch(model.config.vocab_size, prompt_len=6, response_len=5)
    lp0, en0, g0 = _scores_and_grads(model, score_tokens, ids, attn, target, 3)
    lp1, en1, g1 = _scores_and_grads(model, score_tokens_shared_prefix, ids, attn, target, 6, 3)
    assert (lp1[~target] == 0).all() and (en1[~target] == 0).all()
    assert torch.allclose(lp1, lp0, atol=1e-5) and torch.allclose(en1, en0, atol=1e-5)
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        scale = g0[name].abs().max().clamp(min=1e-6)
        assert (g1[name] - g0[name]).abs().max() / scale < 1e-4, name


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "gemma", "gemma2", "gemma3"])
@pytest.mark.parametrize("tied", [False, True])
def test_embedding_through_the_used_rows_equals_the_dense_lookup_with_gradients(family, tied):
    """`EmbeddingRows`: the same values bit for bit and the same gradients, the padding row's included (none); bit
    for bit without tied embeddings, and to float rounding with them (the head's gradient is added in another
    order). Gemma's scaled embeddings take this path too."""
    from transformers import AutoModelForCausalLM

    from posttrain_probe.testing import tiny_config, tiny_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tiny_tokenizer()), tie_embeddings=tied)).eval()
    ids, attn, target = _grouped_batch(model.config.vocab_size, prompt_len=6, response_len=5)
    pad = model.get_input_embeddings().padding_idx
    assert pad is None or (ids == pad).any()  # the padding row is among the rows used
    for fn, args in ((score_tokens_shared_prefix, (6, 3)), (score_tokens, (3,))):
        lp0, en0, g0 = _scores_and_grads(model, fn, ids, attn, target, *args)
        model.zero_grad(set_to_none=True)
        rows = embedding_rows(model, ids)
        assert rows is not None and len(rows.index) < model.config.vocab_size
        lp1, en1 = fn(model, ids, attn, target, *args, rows=rows)
        (lp1.sum() + 0.5 * en1.sum()).backward()
        rows.add_grad()
        g1 = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert torch.equal(lp1, lp0) and torch.equal(en1, en0)
        assert g0.keys() == g1.keys()
        for name in g0:
            if tied:
                assert (g1[name] - g0[name]).abs().max() <= 1e-6 * g0[name].abs().max(), name
            else:
                assert torch.equal(g1[name], g0[name]), name
        if pad is not None and not tied:  # tied: the head's gradient reaches the padding row too
            assert (model.get_input_embeddings().weight.grad[pad] == 0).all()


def test_embedding_rows_keep_the_dense_path_where_they_cannot_apply(tiny_model):
    ids = torch.tensor([[4, 5, 4]])
    with torch.no_grad():
        assert embedding_rows(tiny_model, ids) is None  # nothing to differentiate
    emb = tiny_model.get_input_embeddings()
    emb.weight.requires_grad_(False)
    try:
        assert embedding_rows(tiny_model, ids) is None  # a frozen table
    finally:
        emb.weight.requires_grad_(True)
    rows = embedding_rows(tiny_model, ids)
    assert rows.index.tolist() == [4, 5] and torch.equal(rows.embed(ids), emb(ids))

    class Shifted(torch.nn.Embedding):  # an embedding whose forward is not a (scaled) lookup
        def forward(self, x):
            return super().forward(x) + 1.0

    class Model(torch.nn.Module):
        def get_input_embeddings(self):
            return self.e

    m = Model()
    m.e = Shifted(10, 3)
    assert embedding_rows(m, ids) is None
    m.e.embed_scale = torch.tensor(2.0)  # has a scale, but its output is not lookup × scale
    assert embedding_rows(m, ids) is None


def test_shared_prefix_scoring_refuses_targets_inside_the_prefix(tiny_model):
    ids, attn, target = _grouped_batch(tiny_model.config.vocab_size, prompt_len=6, response_len=5)
    target[:, 5] = True
    with pytest.raises(ValueError, match="inside the shared prefix"):
        score_tokens_shared_prefix(tiny_model, ids, attn, target, 6)
    with pytest.raises(ValueError, match="prefix_width"):
        score_tokens_shared_prefix(tiny_model, ids, attn, target, 0)
