"""Chunked log-prob / entropy against the full softmax; Cov and Ω predictors."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_probe.rlvr.entropy import (
    centred_cov,
    chunked_logp_entropy,
    logp_entropy_from_logits,
    predicted_entropy_change,
    steer_omega,
)


def test_uniform_logits_give_log_v_entropy():
    logp, ent = logp_entropy_from_logits(torch.zeros(3, 7), torch.tensor([0, 3, 6]))
    assert logp.tolist() == pytest.approx([-math.log(7)] * 3)
    assert ent.tolist() == pytest.approx([math.log(7)] * 3)


def test_entropy_matches_definition_and_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=g) * 3
    targets = torch.randint(0, 11, (5,), generator=g)
    for temp in (1.0, 0.7):
        p = torch.softmax(logits.double() / temp, -1)
        logp, ent = logp_entropy_from_logits(logits, targets, temp)
        assert torch.allclose(ent.double(), -(p * p.log()).sum(-1), atol=1e-5)
        assert torch.allclose(logp.double(), p.log().gather(-1, targets[:, None]).squeeze(-1), atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunked_values_and_gradients_equal_the_unchunked_computation(chunk):
    g = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(8, 13)
    hidden = torch.randn(10, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 13, (10,), generator=g)
    lp, en = chunked_logp_entropy(hidden, targets, head, chunk_size=chunk)
    (lp.sum() + 0.3 * en.sum()).backward()
    grad_chunked, wgrad_chunked = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    lp2, en2 = logp_entropy_from_logits(head(hidden), targets)
    (lp2.sum() + 0.3 * en2.sum()).backward()
    assert torch.allclose(lp, lp2, atol=1e-6) and torch.allclose(en, en2, atol=1e-6)
    assert torch.allclose(grad_chunked, hidden.grad, atol=1e-6)
    assert torch.allclose(wgrad_chunked, head.weight.grad, atol=1e-6)


def test_no_logits_block_is_larger_than_one_chunk_forward_and_backward():
    seen = []
    lin = torch.nn.Linear(8, 13)

    def head(h):
        out = lin(h)
        seen.append(out.shape[0])
        return out

    hidden = torch.randn(50, 8, requires_grad=True)
    lp, en = chunked_logp_entropy(hidden, torch.zeros(50, dtype=torch.long), head, chunk_size=16)
    (lp.sum() + en.sum()).backward()
    assert max(seen) <= 16 and sum(seen) == 2 * 50  # forward + checkpointed recompute in backward


def test_cov_and_omega_predictors_by_hand():
    logp = torch.tensor([[-1.0, -3.0, -1.0, -3.0]])
    adv = torch.tensor([[3.0, 3.0, -1.0, -1.0]])
    mask = torch.tensor([[True, True, True, True]])
    cov = centred_cov(logp, adv, mask)
    assert cov.tolist()[0] == pytest.approx([2.0, -2.0, -2.0, 2.0])
    assert predicted_entropy_change(cov, mask) == pytest.approx(0.0)
    # masked tokens are excluded from the means and get 0
    m2 = torch.tensor([[True, True, False, False]])
    cov2 = centred_cov(logp, adv, m2)  # log π centred [1, -1], A centred [0, 0]
    assert cov2.tolist()[0] == pytest.approx([0.0, 0.0, 0.0, 0.0])
    old = torch.log(torch.tensor([[0.5]]))
    om = steer_omega(torch.tensor([[1.0]]), old, old, torch.tensor([[1.0]]), torch.tensor([[True]]))
    assert om.item() == pytest.approx(2 * 0.25 * (math.log(0.5) + 1), rel=1e-6)
    assert predicted_entropy_change(om, torch.tensor([[True]])) == pytest.approx(-om.item())
