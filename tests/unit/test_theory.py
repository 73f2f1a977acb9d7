"""Model-free checks of the entropy identities: Lemma 1 and Theorems 1–2 on softmax bandits."""

from __future__ import annotations

import math

import torch

from posttrain_probe.analysis.theory import (
    bandit_advantage,
    entropy_change,
    lemma1_prediction,
    pg_step,
    policy_cov,
    softmax_entropy,
    theorem_prediction,
)

G = torch.Generator().manual_seed(0)


def test_entropy_and_cov_basics():
    assert abs(softmax_entropy(torch.zeros(8)).item() - math.log(8)) < 1e-12
    z = torch.randn(20, generator=G, dtype=torch.float64)
    x = torch.randn(20, generator=G, dtype=torch.float64)
    p = torch.softmax(z, -1)
    assert torch.isclose(policy_cov(z, x, x), (p * x * x).sum() - (p * x).sum() ** 2)
    # Cov is blind to constant shifts of δ, as the entropy is (softmax is shift-invariant)
    assert torch.isclose(lemma1_prediction(z, x), lemma1_prediction(z, x + 3.0))
    assert torch.isclose(entropy_change(z, x * 1e-2), entropy_change(z, x * 1e-2 + 3.0))


def test_lemma1_error_shrinks_quadratically():
    z = torch.randn(64, 50, generator=G, dtype=torch.float64) * 2
    direction = torch.randn(64, 50, generator=G, dtype=torch.float64)
    errs = []
    for s in (1e-1, 1e-2, 1e-3):
        delta = s * direction
        errs.append((entropy_change(z, delta) - lemma1_prediction(z, delta)).abs().max().item())
    # each 10× smaller step must shrink the error about 100× (second order), not 10× (first order)
    for big, small in zip(errs, errs[1:]):
        assert 50 < big / small < 200
    # and the first-order term itself is correct to well under 1% at s = 1e-3
    delta = 1e-3 * direction
    rel = (entropy_change(z, delta) - lemma1_prediction(z, delta)).abs() / lemma1_prediction(z, delta).abs()
    assert rel.median().item() < 1e-2


def test_advantage_is_zero_mean_under_the_policy():
    z = torch.randn(10, 6, generator=G, dtype=torch.float64)
    r = torch.rand(10, 6, generator=G, dtype=torch.float64)
    a = bandit_advantage(z, r)
    assert torch.allclose((torch.softmax(z, -1) * a).sum(-1), torch.zeros(10, dtype=torch.float64), atol=1e-12)


def test_pg_step_is_the_exact_gradient_of_expected_reward():
    z = torch.randn(7, generator=G, dtype=torch.float64, requires_grad=True)
    r = torch.rand(7, generator=G, dtype=torch.float64)
    (torch.softmax(z, -1) * r).sum().backward()
    assert torch.allclose(pg_step(z.detach(), r, eta=1.0), z.grad)


def _bandits(n=500, k=10):
    z = torch.randn(n, k, generator=G, dtype=torch.float64) * 2
    r = torch.bernoulli(torch.full((n, k), 0.4, dtype=torch.float64), generator=G)
    return z, r


def _check_first_order(natural: bool) -> None:
    """ΔH = prediction + O(η²): the worst error divided by η² stays put as η shrinks, and wherever the
    first-order term exceeds η² (the scale of the remainder) its sign is the sign of the real change."""
    z, r = _bandits()
    scaled_err = []
    for eta in (1e-1, 1e-2, 1e-3):
        pred = theorem_prediction(z, r, eta, natural)
        real = entropy_change(z, pg_step(z, r, eta, natural))
        scaled_err.append(((real - pred).abs() / eta**2).max().item())
        meaningful = pred.abs() > eta**2
        assert meaningful.sum() > 20
        assert (torch.sign(real) == torch.sign(pred))[meaningful].all()
        if eta <= 1e-2:
            assert ((real - pred).abs() / pred.abs())[meaningful].median() < 0.01
    assert max(scaled_err) / min(scaled_err) < 1.5


def test_theorem1_pg_entropy_change_follows_minus_cov_of_logpi_and_pi_times_a():
    _check_first_order(natural=False)
    z, r = _bandits(n=20)
    # the prediction is exactly Lemma 1 applied to the PG step
    assert torch.allclose(theorem_prediction(z, r, 1e-2), lemma1_prediction(z, pg_step(z, r, 1e-2)))


def test_theorem2_npg_entropy_change_follows_minus_cov_of_logpi_and_a():
    _check_first_order(natural=True)
    z, r = _bandits(n=20)
    assert torch.allclose(
        theorem_prediction(z, r, 1e-2, natural=True), lemma1_prediction(z, pg_step(z, r, 1e-2, natural=True))
    )


def test_rewarding_the_most_likely_action_lowers_entropy_and_the_rare_one_raises_it():
    z = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64)
    for natural in (False, True):
        likely = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        rare = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        assert theorem_prediction(z, likely, 0.01, natural) < 0
        assert entropy_change(z, pg_step(z, likely, 0.01, natural)) < 0
        assert theorem_prediction(z, rare, 0.01, natural) > 0
        assert entropy_change(z, pg_step(z, rare, 0.01, natural)) > 0
