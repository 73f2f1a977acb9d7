"""Token scoring on tiny models of three architectures equals the HF forward with left padding; the shared-prefix
scorer equals the plain one (values and gradients) on every family and on both of its paths (packed rows, KV cache),
sliding-window attention included."""

from __future__ import annotations

import pytest
import torch

from posttrain_probe.rlvr.entropy import (
    _score_packed,
    check_head_matches_forward,
    embedding_rows,
    pack_shared_prefix,
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


def _uneven_rows(ids, attn, target):
    """Rows as a shuffled rows-split micro-batch holds them: prompts with 1, 3 and 2 of their completions."""
    pick = torch.tensor([5, 0, 9, 6, 3, 10, 1])
    return ids[pick], attn[pick], target[pick]


def _family_model(family: str, window: int | None, attn_impl: str | None = None):
    from transformers import AutoModelForCausalLM

    from posttrain_probe.testing import tiny_config, tiny_tokenizer

    cfg = tiny_config(family, len(tiny_tokenizer()))
    if window is not None:
        cfg.sliding_window = window
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_impl).eval()


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "gemma", "gemma2", "gemma3"])
@pytest.mark.parametrize("path", ["packed", "packed-narrow", "packed-eager", "cache"])
@pytest.mark.parametrize("uneven", [False, True])
def test_shared_prefix_scoring_equals_plain_scoring_with_gradients(family, path, uneven, monkeypatch):
    """Both shared-prefix paths (prompts and completions packed without padding under a block mask; the prompt's KV
    cache copied to its rows) against plain scoring, values and every gradient, with left-padded prompts,
    right-padded completions of several lengths and groups of unequal size. `packed-narrow`: rows of 12 columns, so
    a prompt's completions are split over segments that each repeat the prompt, spread over several rows. Gemma-2/3
    on the cache path get a window shorter than the rows, so the sliding layers truncate; on the packed path a window
    longer than the rows (a shorter one is never packed)."""
    from posttrain_probe.rlvr import entropy

    sliding = family in ("gemma2", "gemma3")
    window = (4 if path == "cache" else 64) if sliding else None
    model = _family_model(family, window, "eager" if path == "packed-eager" else None)  # None: the family's own
    ids, attn, target = _grouped_batch(model.config.vocab_size, prompt_len=6, response_len=5)
    if uneven:
        ids, attn, target = _uneven_rows(ids, attn, target)
    if path == "cache":
        monkeypatch.setattr(entropy, "packable", lambda *a: False)
    if path == "packed-narrow":
        pack = entropy.pack_shared_prefix
        monkeypatch.setattr(entropy, "pack_shared_prefix", lambda *a: pack(*a, width=12))
    layouts = []
    monkeypatch.setattr(entropy, "_score_packed", lambda *a: layouts.append(a[2]) or _score_packed(*a))
    lp0, en0, g0 = _scores_and_grads(model, score_tokens, ids, attn, target, 3)
    lp1, en1, g1 = _scores_and_grads(model, score_tokens_shared_prefix, ids, attn, target, 6, 3)
    assert bool(layouts) == path.startswith("packed")
    if path == "packed-narrow":
        assert len(layouts[0].ids) > 3 and layouts[0].ids.shape[1] == 12
    assert (lp1[~target] == 0).all() and (en1[~target] == 0).all()
    assert torch.allclose(lp1, lp0, atol=1e-5) and torch.allclose(en1, en0, atol=1e-5)
    assert g0.keys() == g1.keys() and g0
    for name in g0:
        scale = g0[name].abs().max().clamp(min=1e-6)
        assert (g1[name] - g0[name]).abs().max() / scale < 1e-4, name


@pytest.mark.parametrize("width", [64, 12, 1])
def test_packed_layout_holds_each_completion_once_after_its_prompt_and_masks_everything_else(width):
    ids, attn, _ = _uneven_rows(*_grouped_batch(50, prompt_len=6, response_len=5))
    lay = pack_shared_prefix(ids, attn, 6, (1000, 8), width=width)
    allowed = lay.allowed[:, 0]
    used = torch.zeros(lay.ids.shape, dtype=torch.bool)
    for b in range(len(ids)):
        n, c = int(attn[b, :6].sum()), int(attn[b, 6:].sum())
        r = int(lay.source_row[b, 0])
        assert (lay.source_row[b, :c] == r).all()
        cols = torch.cat([lay.source_col[b, 1:c], lay.source_col[b, c - 1 : c] + 1])  # row b's completion
        last = int(lay.source_col[b, 0])  # the prompt's last token predicts the first completion token
        prompt = torch.arange(last - n + 1, last + 1)
        assert torch.equal(lay.ids[r, cols], ids[b, 6 : 6 + c]) and torch.equal(lay.ids[r, prompt], ids[b, 6 - n : 6])
        assert torch.equal(lay.positions[r, prompt], torch.arange(n))
        assert torch.equal(lay.positions[r, cols], torch.arange(n, n + c))
        for j, q in enumerate(cols.tolist()):  # the completion's queries see exactly their own causal row
            assert allowed[r, q].nonzero().flatten().tolist() == prompt.tolist() + cols[: j + 1].tolist(), (b, q)
        assert not used[r, cols].any()  # no column holds two completions' tokens
        used[r, cols] = True
    assert (allowed.sum(-1) >= 1).all()  # no query without a key (filler sees itself)
    if width >= 64:  # one segment per prompt in a single row: every prompt token once, no padding
        assert lay.ids.shape == (1, sum(int(attn[b, :6].sum()) for b in (0, 1, 2)) + int(attn[:, 6:].sum()))
    else:
        assert lay.ids.shape[1] <= max(width, 6 + 5)


def test_packing_is_used_only_where_it_is_checked():
    from posttrain_probe.rlvr.entropy import packable

    llama = _family_model("llama", None, "sdpa")
    assert packable(llama, 40)
    assert not packable(_family_model("gemma3", 32), 40)  # a window the rows reach
    assert packable(_family_model("gemma3", 64), 40)
    llama.config._attn_implementation = "flex_attention"
    assert not packable(llama, 40)
    llama.config._attn_implementation = "sdpa"
    llama.config.model_type = "mystery"
    assert not packable(llama, 40)
    ids, attn, _ = _grouped_batch(50, prompt_len=6, response_len=5)
    attn[0, 7] = 0  # a hole inside a completion: not packed
    assert pack_shared_prefix(ids, attn, 6, (1000, 8)) is None


def test_packed_rows_are_as_wide_as_the_cost_model_prefers():
    """Small matrices against wide attention: one segment per prompt, each prompt once; attention-heavy (d large
    against the layer's weights): rows of one prompt and one completion, nothing wasted on masked pairs."""
    from posttrain_probe.rlvr.entropy import layer_shape

    ids, attn, _ = _uneven_rows(*_grouped_batch(50, prompt_len=6, response_len=5))
    prompt_tokens = sum(int(attn[b, :6].sum()) for b in (0, 1, 2))
    cheap_attention = pack_shared_prefix(ids, attn, 6, (10**9, 1))
    assert cheap_attention.ids.numel() == prompt_tokens + int(attn[:, 6:].sum())
    dear_attention = pack_shared_prefix(ids, attn, 6, (1, 10**6))
    assert len(dear_attention.ids) == len(ids) and dear_attention.ids.shape[1] == int(attn.sum(1).max())
    cfg = _family_model("llama", None).config
    d, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    assert layer_shape(_family_model("llama", None)) == (2 * d * d + 2 * d * kv + 3 * d * cfg.intermediate_size, d)


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
