"""The KV-cached sampler on tiny models: greedy parity with HF generate, common random numbers."""

from __future__ import annotations

import pytest
import torch

from posttrain_probe.rlvr.sampler import draw_tokens, sample


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from posttrain_probe.testing import make_tiny_checkpoint

    path = make_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param))
    return AutoModelForCausalLM.from_pretrained(path).eval()


def _prompts():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 60, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3], mask[3, :5] = 0, 0
    ids[mask == 0] = 1
    return ids, mask


def test_greedy_tokens_equal_hf_generate_with_left_padding(tiny):
    ids, mask = _prompts()
    stops = [3, 11, 17]
    out = sample(tiny, ids, mask, 10, stops, pad_id=1, temperature=0)
    ref = tiny.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=stops, pad_token_id=1
    )[:, ids.shape[1] :]
    n = out.response_ids.shape[1]
    assert torch.equal(out.response_ids, ref[:, :n])
    assert (ref[:, n:] == 1).all()  # HF only padded after every row stopped
    # the mask covers tokens up to and including the first stop token
    for row, m, fin in zip(out.response_ids, out.response_mask, out.finished):
        hits = [i for i, t in enumerate(row.tolist()) if t in stops]
        assert bool(fin) == bool(hits)
        assert int(m.sum()) == (hits[0] + 1 if hits else n)


def test_same_generator_same_rollout_and_the_first_token_is_a_fair_draw(tiny):
    ids, mask = _prompts()
    a = sample(tiny, ids, mask, 8, [3], 1, 1.0, torch.Generator().manual_seed(5))
    b = sample(tiny, ids, mask, 8, [3], 1, 1.0, torch.Generator().manual_seed(5))
    c = sample(tiny, ids, mask, 8, [3], 1, 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(a.response_ids, b.response_ids)
    assert not torch.equal(a.response_ids, c.response_ids)
    # inverse-CDF with the same uniforms as the sampler draws
    u = torch.rand(5, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = tiny(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    assert torch.equal(a.response_ids[:, 0], draw_tokens(logits, u[:, 0], 1.0))


def test_sampler_refuses_bad_input(tiny):
    ids, mask = _prompts()
    with pytest.raises(ValueError, match="Generator"):
        sample(tiny, ids, mask, 4, [3], 1, 1.0)
    right_padded = mask.flip(1)
    with pytest.raises(ValueError, match="left-padded"):
        sample(tiny, ids, right_padded, 4, [3], 1, 0.0)


def test_repeated_prompts_are_prefilled_once_and_sample_as_if_each_ran(tiny, monkeypatch):
    from posttrain_probe.rlvr import sampler

    ids, mask = _prompts()
    ids, mask = ids.repeat_interleave(3, 0), mask.repeat_interleave(3, 0)  # GRPO groups of G = 3
    batch_sizes = []
    hook = tiny.register_forward_pre_hook(
        lambda mod, args, kw: batch_sizes.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        shared = sample(tiny, ids, mask, 8, [3], 1, 1.0, torch.Generator().manual_seed(5))
    finally:
        hook.remove()
    greedy = sample(tiny, ids, mask, 8, [3], 1, 0.0)
    assert batch_sizes[0] == 5  # the prefill ran the 5 distinct prompts, the decoding steps all 15 rows
    assert set(batch_sizes[1:]) == {15}
    monkeypatch.setattr(sampler, "_distinct_rows", lambda ids, mask: None)  # every row prefilled
    alone = sample(tiny, ids, mask, 8, [3], 1, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(shared.response_ids, alone.response_ids)
    assert torch.equal(shared.response_mask, alone.response_mask)
    assert torch.equal(greedy.response_ids, sample(tiny, ids, mask, 8, [3], 1, 0.0).response_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_and_entropies_equal_scoring_the_rollout(tiny, temperature):
    from posttrain_probe.rlvr.entropy import score_tokens

    ids, mask = _prompts()
    r = sample(tiny, ids, mask, 8, [3, 11], 1, temperature, torch.Generator().manual_seed(2))
    full_ids, attn, target = r.full()
    with torch.no_grad():
        logp, ent = score_tokens(tiny, full_ids, attn, target, temperature=temperature)
    got_logp, got_ent = r.full_scores()
    assert (got_logp[~target] == 0).all() and (got_ent[~target] == 0).all()
    assert torch.allclose(got_logp, logp, atol=1e-5) and torch.allclose(got_ent, ent, atol=1e-5)
    assert sample(tiny, ids, mask, 4, [3], 1, 0.0).full_scores() is None  # greedy: no sampling distribution
