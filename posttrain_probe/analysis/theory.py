"""Exact, model-free entropy identities for softmax policies (Cui et al. 2025, "The Entropy Mechanism of
Reinforcement Learning for Reasoning Language Models").

Lemma 1. For logits z and a small change δ,
    H(softmax(z + δ)) − H(softmax(z)) = −Cov_{a∼π}(log π(a), δ_a) + O(‖δ‖²).
Theorem 1 (exact policy gradient on a softmax bandit with rewards r). The gradient of J = Σ_a π_a r_a
with respect to z is π ⊙ A with A = r − J, so a step δ = η π ⊙ A changes the entropy by
    ΔH ≈ −η Cov_{a∼π}(log π(a), π(a) A(a)).
Theorem 2 (natural policy gradient): δ = η A and
    ΔH ≈ −η Cov_{a∼π}(log π(a), A(a)).
Everything is float64 and works on the last axis, so batches of bandits are one call.
"""

from __future__ import annotations

import torch


def softmax_entropy(z: torch.Tensor) -> torch.Tensor:
    """H(softmax(z)) in nats over the last axis."""
    logp = torch.log_softmax(z.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def policy_cov(z: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cov_{a∼softmax(z)}(x_a, y_a) over the last axis."""
    p = torch.softmax(z.double(), dim=-1)
    x, y = x.double(), y.double()
    ex, ey = (p * x).sum(-1, keepdim=True), (p * y).sum(-1, keepdim=True)
    return (p * (x - ex) * (y - ey)).sum(-1)


def entropy_change(z: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The exact ΔH = H(softmax(z + δ)) − H(softmax(z))."""
    return softmax_entropy(z.double() + delta.double()) - softmax_entropy(z)


def lemma1_prediction(z: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Lemma 1's first-order ΔH: −Cov_π(log π, δ)."""
    return -policy_cov(z, torch.log_softmax(z.double(), dim=-1), delta)


def bandit_advantage(z: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """A(a) = r(a) − E_π[r] for a softmax bandit."""
    p = torch.softmax(z.double(), dim=-1)
    r = rewards.double()
    return r - (p * r).sum(-1, keepdim=True)


def pg_step(z: torch.Tensor, rewards: torch.Tensor, eta: float, natural: bool = False) -> torch.Tensor:
    """The logit change δ of one exact step: η π ⊙ A (policy gradient) or η A (natural PG)."""
    adv = bandit_advantage(z, rewards)
    return eta * adv if natural else eta * torch.softmax(z.double(), dim=-1) * adv


def theorem_prediction(z: torch.Tensor, rewards: torch.Tensor, eta: float, natural: bool = False) -> torch.Tensor:
    """Theorem 1 (PG): −η Cov(log π, π A); Theorem 2 (NPG): −η Cov(log π, A)."""
    logp = torch.log_softmax(z.double(), dim=-1)
    adv = bandit_advantage(z, rewards)
    y = adv if natural else torch.softmax(z.double(), dim=-1) * adv
    return -eta * policy_cov(z, logp, y)
