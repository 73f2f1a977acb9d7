"""The RLVR sampler's inverse-CDF draw by hand and against the softmax."""

from __future__ import annotations

import torch

from posttrain_probe.rlvr.sampler import draw_tokens


def test_inverse_cdf_draw_by_hand():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]])).repeat(6, 1)  # cdf 0.2, 0.7, 1.0
    u = torch.tensor([0.0, 0.19, 0.21, 0.69, 0.71, 0.999], dtype=torch.float64)
    assert draw_tokens(logits, u, 1.0).tolist() == [0, 0, 1, 1, 2, 2]
    assert draw_tokens(logits, None, 0.0).tolist() == [1] * 6


def test_inverse_cdf_frequencies_match_the_softmax():
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]])
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for temp in (1.0, 0.5):
        toks = draw_tokens(logits.expand(len(u), -1), u, temp)
        freq = torch.bincount(toks, minlength=4).double() / len(u)
        assert torch.allclose(freq, torch.softmax(logits[0].double() / temp, -1), atol=0.01)
