"""Token scoring on tiny models of three architectures equals the HF forward with left padding."""

from __future__ import annotations

import pytest
import torch

from posttrain_probe.rlvr.entropy import (
    check_head_matches_forward,
    score_tokens,
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
