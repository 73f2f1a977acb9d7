"""The entropy-change predictors on a tabular softmax policy trained through the project's own policy loss.

A logits table θ (one row per state) is the whole policy, so every quantity has a closed form: an SGD step on
`losses.policy_loss` changes the logits by δz = −η ∇θ L, the realized entropy change is computed exactly, and
`entropy.first_order_entropy_change` (−Cov_{a∼π}(log π(a), δz(a))) must match it to first order in η. Mutations
these tests caught (each tried by hand): the sign of first_order_entropy_change flipped, its H dropped (log π
instead of log π + H), the sign of steer_omega flipped, the sign of −ρA in losses.pg_clip_terms flipped.
(Not centring A in centred_cov goes unnoticed here: the MEAN of Cov_i is the covariance either way.)
"""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_probe.rlvr.entropy import (
    centred_cov,
    entropy_from_logits,
    first_order_entropy_change,
    steer_omega,
)
from posttrain_probe.rlvr.losses import LossConfig, policy_loss


def _sgd_step(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, adv: torch.Tensor, eta: float):
    """One SGD step of the project's grpo loss (on-policy, ρ = 1) on the tabular policy; returns θ'."""
    table = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(table, -1)[states, actions][None]  # (1, N)
    mask = torch.ones_like(logp, dtype=torch.bool)
    loss, _ = policy_loss(LossConfig("grpo"), logp, logp.detach(), adv[None], mask)
    loss.backward()
    return (table - eta * table.grad).detach()


def _problem(seed: int = 0, n_states: int = 3, vocab: int = 6, n_tokens: int = 40):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_states, vocab, generator=g, dtype=torch.float64) * 1.5
    states = torch.randint(0, n_states, (n_tokens,), generator=g)
    probs = torch.softmax(theta, -1)[states]
    actions = torch.multinomial(probs, 1, generator=g).squeeze(-1)
    adv = torch.randn(n_tokens, generator=g, dtype=torch.float64)
    return theta, states, actions, adv


def test_the_sgd_logit_change_is_the_analytic_policy_gradient():
    theta, states, actions, adv = _problem()
    eta = 0.1
    new = _sgd_step(theta, states, actions, adv, eta)
    # token-mean of −A log π(a|s): δz_s = (η/N) Σ_{i: s_i=s} A_i (e_{a_i} − π_s)
    pi = torch.softmax(theta, -1)
    expected = torch.zeros_like(theta)
    for s, a, A in zip(states.tolist(), actions.tolist(), adv.tolist()):
        expected[s] += A * (torch.nn.functional.one_hot(torch.tensor(a), theta.shape[1]).double() - pi[s])
    assert torch.allclose(new - theta, eta * expected / len(adv), atol=1e-12)


def test_realized_entropy_change_approaches_minus_cov_of_logp_and_logit_change_as_eta_shrinks():
    theta, states, actions, adv = _problem()
    errors = []
    for eta in (1e-1, 1e-2, 1e-3):
        new = _sgd_step(theta, states, actions, adv, eta)
        realized = entropy_from_logits(new) - entropy_from_logits(theta)  # (S,)
        first = first_order_entropy_change(theta, new)
        # the first-order term is −Cov_{a∼π}(log π(a), δz(a)), written out here independently of the function
        pi = torch.softmax(theta, -1)
        logpi = torch.log_softmax(theta, -1)
        dz = new - theta
        cov = (pi * logpi * dz).sum(-1) - (pi * logpi).sum(-1) * (pi * dz).sum(-1)
        assert torch.allclose(first.double(), -cov, rtol=1e-5, atol=1e-12)
        ratio = realized.double() / first.double()
        errors.append(float((ratio - 1).abs().max()))
    # O(η²) remainder: the relative error falls ~10x per 10x smaller η, and is small at η = 1e-3
    assert errors[2] < 0.01, errors
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[1] / errors[2] > 5, errors


def test_steer_omega_sign_agrees_with_the_realized_single_token_change():
    # Hao et al.: ΔH_i ∝ −Ω_i. One sampled token per update, random 8-way policies; exact agreement is not a theorem
    # (Ω drops the other actions' terms of the first-order change), but it holds for the large majority of updates
    g = torch.Generator().manual_seed(1)
    agree = 0
    n = 400
    for _ in range(n):
        theta = torch.randn(1, 8, generator=g, dtype=torch.float64) * 2
        a = torch.multinomial(torch.softmax(theta, -1), 1, generator=g).flatten()
        adv = torch.randn(1, generator=g, dtype=torch.float64)
        new = _sgd_step(theta, torch.zeros(1, dtype=torch.long), a, adv, 1e-3)
        realized = float(entropy_from_logits(new) - entropy_from_logits(theta))
        logp = torch.log_softmax(theta, -1)[:, a]  # (1, 1)
        ent = entropy_from_logits(theta)[:, None]
        omega = steer_omega(adv[None], logp, logp, ent, torch.ones(1, 1, dtype=torch.bool))
        agree += math.copysign(1, realized) == math.copysign(1, -float(omega))
    assert agree / n > 0.85
    # the four quadrants on one peaked policy: A>0 on the likely action and A<0 on an unlikely one lower H
    theta = torch.tensor([[3.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    for action, sign_a, sign_dh in ((0, 1, -1), (0, -1, 1), (3, 1, 1), (3, -1, -1)):
        adv = torch.tensor([float(sign_a)], dtype=torch.float64)
        new = _sgd_step(theta, torch.zeros(1, dtype=torch.long), torch.tensor([action]), adv, 1e-3)
        realized = float(entropy_from_logits(new) - entropy_from_logits(theta))
        logp = torch.log_softmax(theta, -1)[:, [action]]
        omega = steer_omega(adv[None], logp, logp, entropy_from_logits(theta)[:, None], torch.ones(1, 1).bool())
        assert math.copysign(1, realized) == sign_dh == math.copysign(1, -float(omega))


def test_natural_gradient_is_fisher_pinv_times_the_gradient_and_its_entropy_change_is_minus_cov_of_logp_and_a():
    g = torch.Generator().manual_seed(2)
    vocab = 7
    theta = torch.randn(1, vocab, generator=g, dtype=torch.float64)
    A = torch.randn(vocab, generator=g, dtype=torch.float64)  # advantage of every action
    pi = torch.softmax(theta, -1)[0]
    # ∇J = E_{a∼π}[A(a) ∇ log π(a)] through the project's loss: one token per action, weighted by V·π(a)
    table = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(table, -1)[0][None]  # (1, V)
    weights = (vocab * pi * A).detach()[None]
    loss, _ = policy_loss(LossConfig("grpo"), logp, logp.detach(), weights, torch.ones(1, vocab, dtype=torch.bool))
    loss.backward()
    grad_j = -table.grad[0]  # (V,)
    fisher = torch.diag(pi) - torch.outer(pi, pi)  # E_π[∇log π ∇log πᵀ] of a softmax, rank V−1
    natural = torch.linalg.pinv(fisher) @ grad_j
    assert torch.allclose(natural, A - A.mean(), atol=1e-9)  # F⁺∇J = A up to the null direction 1
    eta = 1e-4
    new = theta + eta * natural[None]
    first = float(first_order_entropy_change(theta, new))
    logpi = torch.log_softmax(theta, -1)[0]
    cov_pi = float((pi * logpi * A).sum() - (pi * logpi).sum() * (pi * A).sum())  # Cov_{a∼π}(log π(a), A(a))
    assert first == pytest.approx(-eta * cov_pi, rel=1e-5)
    realized = float(entropy_from_logits(new) - entropy_from_logits(theta))
    assert realized == pytest.approx(-eta * cov_pi, rel=1e-2)
    # the trainer's per-token predictor: mean over sampled tokens of centred Cov_i estimates Cov_{a∼π}(log π, A)
    a = torch.multinomial(pi, 200_000, replacement=True, generator=g)
    mask = torch.ones(1, len(a), dtype=torch.bool)
    est = float(centred_cov(logpi[a][None], A[a][None], mask).mean())
    assert est == pytest.approx(cov_pi, rel=0.03)
