"""Token losses, selections, aggregations and KL estimators against hand-computed references."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_probe.rlvr.losses import (
    LossConfig,
    aggregate,
    kl_penalty,
    policy_loss,
    select_tokens,
)


def _t(values) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float32)


# ratios ρ = [1.25, 0.5, 1, 1], advantages [1, 1, -1, -1]
OLD = torch.log(_t([0.4, 0.5, 0.8, 0.1]))
NEW = torch.log(_t([0.5, 0.25, 0.8, 0.1]))
ADV = _t([1.0, 1.0, -1.0, -1.0])
MASK = torch.ones(1, 4, dtype=torch.bool)


def _loss_and_grad(cfg, new=NEW, old=OLD, adv=ADV, mask=MASK, **kw):
    logp = new.clone().requires_grad_(True)
    loss, diag = policy_loss(cfg, logp, old, adv, mask, **kw)
    loss.backward()
    return loss.item(), logp.grad, diag


def test_grpo_clipped_surrogate_value_gradient_and_clip_fraction():
    # per token: -min(1.25, 1.2) = -1.2 (clipped), -min(0.5, 0.8) = -0.5, +1, +1 → mean 0.075
    loss, grad, diag = _loss_and_grad(LossConfig("grpo"))
    assert loss == pytest.approx(0.075, abs=1e-6)
    # d/dlogp of -ρA/4 on unclipped tokens; 0 on the clipped one
    assert grad.tolist()[0] == pytest.approx([0.0, -0.125, 0.25, 0.25], abs=1e-6)
    assert diag["clip_frac"] == 0.25 and diag["clip_high_frac"] == 0.25 and diag["clip_low_frac"] == 0.0
    assert diag["touched_frac"] == 0.0


def test_clip_higher_raises_only_the_upper_bound():
    cfg = LossConfig("clip_higher")
    assert (cfg.clip_low, cfg.clip_high) == (0.2, 0.28)
    loss, grad, diag = _loss_and_grad(cfg)  # token 0: -min(1.25, 1.28) = -1.25
    assert loss == pytest.approx((-1.25 - 0.5 + 2) / 4, abs=1e-6)
    assert diag["clip_frac"] == 0.0


def test_dual_clip_caps_the_loss_of_negative_advantages():
    old = torch.log(_t([0.1, 0.1]))
    new = torch.log(_t([0.5, 0.5]))  # ρ = 5
    adv = _t([-1.0, 1.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # token 0 (A<0): grpo gives -min(-5, -1.2) = 5, dual clip caps at c·|A| = 3; token 1: -min(5, 1.2) = -1.2
    loss, grad, diag = _loss_and_grad(LossConfig("dual_clip"), new, old, adv, mask)
    assert loss == pytest.approx((3 - 1.2) / 2, abs=1e-5)
    assert grad.tolist()[0] == pytest.approx([0.0, 0.0], abs=1e-7)
    assert diag["touched_frac"] == 0.5
    loss_grpo, _, _ = _loss_and_grad(LossConfig("grpo"), new, old, adv, mask)
    assert loss_grpo == pytest.approx((5 - 1.2) / 2, abs=1e-5)


def test_entropy_bonus_subtracts_beta_times_entropy_with_its_gradient():
    ent = _t([1.0, 2.0, 3.0, 4.0]).requires_grad_(True)
    logp = NEW.clone().requires_grad_(True)
    loss, _ = policy_loss(LossConfig("entropy_bonus", entropy_coef=0.1), logp, OLD, ADV, MASK, entropy=ent)
    loss.backward()
    assert loss.item() == pytest.approx(0.075 - 0.1 * 2.5, abs=1e-6)
    assert ent.grad.tolist()[0] == pytest.approx([-0.025] * 4)
    with pytest.raises(ValueError, match="entropies"):
        policy_loss(LossConfig("entropy_bonus"), NEW, OLD, ADV, MASK)


# Cov example: log π centred [1, -1, 1, -1]; A = [3, 3, -1, -1] centred [2, 2, -2, -2] → Cov [2, -2, -2, 2]
COV_LOGP = _t([-1.0, -3.0, -1.0, -3.0])
COV_ADV = _t([3.0, 3.0, -1.0, -1.0])


def test_clip_cov_detaches_tokens_inside_the_absolute_window():
    cfg = LossConfig("clip_cov", cov_preset="paper", clip_cov_ratio=0.5)  # window (1, 5), 2 tokens
    sel = select_tokens(cfg, COV_LOGP, COV_LOGP, COV_ADV, MASK)
    assert sel.cov.tolist()[0] == pytest.approx([2.0, -2.0, -2.0, 2.0])
    assert sel.pg_weight.tolist()[0] == [0.0, 1.0, 1.0, 0.0]
    loss, grad, diag = _loss_and_grad(cfg, COV_LOGP, COV_LOGP, COV_ADV)
    assert loss == pytest.approx((0 - 3 + 1 + 0) / 4, abs=1e-6)  # ρ = 1: per token -A, two zeroed
    assert grad.tolist()[0] == pytest.approx([0.0, -0.75, 0.25, 0.0])
    assert diag["touched_frac"] == 0.5
    assert diag["cov_mean"] == pytest.approx(0.0) and diag["cov_pos_frac"] == 0.5


def test_clip_cov_draws_its_random_subset_from_the_generator_and_skips_clipped_tokens():
    cfg = LossConfig("clip_cov", cov_preset="paper", clip_cov_ratio=0.25)  # one of tokens 0 and 3
    picks = set()
    for seed in range(20):
        sel = select_tokens(cfg, COV_LOGP, COV_LOGP, COV_ADV, MASK, generator=torch.Generator().manual_seed(seed))
        zeroed = (sel.pg_weight[0] == 0).nonzero().flatten().tolist()
        assert len(zeroed) == 1 and zeroed[0] in (0, 3)
        again = select_tokens(cfg, COV_LOGP, COV_LOGP, COV_ADV, MASK, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(sel.pg_weight, again.pg_weight)
        picks.add(zeroed[0])
    assert picks == {0, 3}
    # token 0 already clipped (ρ = 1.5 with A > 0) → only token 3 is a candidate
    old = COV_LOGP.clone()
    old[0, 0] -= math.log(1.5)
    sel = select_tokens(LossConfig("clip_cov", cov_preset="paper", clip_cov_ratio=0.5), COV_LOGP, old, COV_ADV, MASK)
    assert sel.pg_weight.tolist()[0] == [1.0, 1.0, 1.0, 0.0]


def test_clip_cov_percentile_window_picks_from_the_top_of_the_distribution():
    logp = torch.linspace(-5, 0, 100)[None]
    adv = torch.linspace(-1, 1, 100)[None]  # Cov = c·t², largest at both ends
    mask = torch.ones(1, 100, dtype=torch.bool)
    cfg = LossConfig("clip_cov", cov_preset="toy")  # 2% from the top-10% Cov window
    sel = select_tokens(cfg, logp, logp, adv, mask, generator=torch.Generator().manual_seed(0))
    zeroed = (sel.pg_weight[0] == 0).nonzero().flatten()
    assert len(zeroed) == 2
    top10 = set(torch.topk(sel.cov[0], 10).indices.tolist())
    assert set(zeroed.tolist()) <= top10


def test_kl_cov_penalizes_the_top_cov_tokens_and_is_inert_on_policy():
    adv = _t([3.0, 3.0, -1.0, -2.0])  # centred [2.25, 2.25, -1.75, -2.75] → Cov [2.25, -2.25, -1.75, 2.75]
    cfg = LossConfig("kl_cov", cov_preset="paper", kl_cov_ratio=0.25, kl_cov_coef=1.0)
    sel = select_tokens(cfg, COV_LOGP, COV_LOGP, adv, MASK)
    assert sel.kl_mask.tolist()[0] == [False, False, False, True]
    old = COV_LOGP.clone()
    old[0, 3] -= 0.1  # log ρ = 0.1 on the penalized token
    ratios = [1.0, 1.0, 1.0, math.exp(0.1)]
    expected = (sum(-r * a for r, a in zip(ratios, [3.0, 3.0, -1.0, -2.0])) + 1.0 * 0.1) / 4
    loss, grad, diag = _loss_and_grad(cfg, COV_LOGP, old, adv)
    assert loss == pytest.approx(expected, abs=1e-6)
    assert grad[0, 3].item() == pytest.approx((-math.exp(0.1) * -2.0 + 1.0) / 4, abs=1e-6)
    assert diag["clip_frac"] == 0.0 and diag["touched_frac"] == 0.25
    # ρ = 1 everywhere: |log ρ| has zero gradient, so the loss gradient equals plain -ρA's
    _, grad_on, _ = _loss_and_grad(cfg, COV_LOGP, COV_LOGP, adv)
    assert grad_on.tolist()[0] == pytest.approx([-0.75, -0.75, 0.25, 0.5])


def test_steer_weights_follow_omega_exp_and_linear():
    # token 0: A=1, π_old=0.5, p=0.5, H=1 → Ω = 2·0.25·(ln 0.5 + 1); token 1: A=-1, π_old=p=0.25, H=0.5
    old = torch.log(_t([0.5, 0.25]))
    adv = _t([1.0, -1.0])
    ent = _t([1.0, 0.5])
    mask = torch.ones(1, 2, dtype=torch.bool)
    om0 = 2 * 0.25 * (math.log(0.5) + 1)
    om1 = -4 * 0.25 * 0.75 * (math.log(0.25) + 0.5)
    sel = select_tokens(LossConfig("steer"), old, old, adv, mask, rollout_entropy=ent)
    assert sel.omega.tolist()[0] == pytest.approx([om0, om1], rel=1e-5)
    kappa = -math.log(0.8) / max(abs(om0), abs(om1))
    assert sel.pg_weight.tolist()[0] == pytest.approx([math.exp(-kappa * abs(om0)), 0.8], rel=1e-5)
    lin = select_tokens(LossConfig("steer", steer_variant="linear"), old, old, adv, mask, rollout_entropy=ent)
    assert lin.pg_weight.tolist()[0] == pytest.approx([1 - 0.2 * abs(om0) / abs(om1), 0.8], rel=1e-5)
    # the weights multiply the PPO loss: ρ = 1 → per token -λA
    loss, grad, _ = _loss_and_grad(LossConfig("steer"), old, old, adv, mask, rollout_entropy=ent)
    w = sel.pg_weight[0].tolist()
    assert loss == pytest.approx((-w[0] + w[1]) / 2, abs=1e-6)
    # tiny |Ω| everywhere: the floor 0.02 keeps the weights near 1
    small = select_tokens(LossConfig("steer"), old, old, adv * 1e-4, mask, rollout_entropy=ent)
    assert small.pg_weight.min().item() > 0.99


def test_aggregations_and_micro_batch_additivity():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "constant-normalized", constant=3).item() == pytest.approx(10 / 6)
    for mode in ("token-mean", "seq-mean-token-mean", "constant-normalized"):
        whole = aggregate(loss, mask, mode, constant=3)
        parts = sum(
            aggregate(loss[i : i + 1], mask[i : i + 1], mode, 3, total_tokens=4.0, total_seqs=2) for i in range(2)
        )
        assert parts.item() == pytest.approx(whole.item())
    with pytest.raises(ValueError, match="constant"):
        aggregate(loss, mask, "constant-normalized")


def test_kl_estimators_and_reference_penalty():
    logp, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert (kl_penalty(x, x.flip(0), "k3") >= 0).all()
    cfg = LossConfig("grpo", kl_coef=0.5, kl_estimator="k1")
    loss, diag = policy_loss(cfg, NEW, OLD, ADV, MASK, ref_logp=NEW - 0.2)
    assert loss.item() == pytest.approx(0.075 + 0.5 * 0.2, abs=1e-6)
    assert diag["kl_ref"] == pytest.approx(0.2, abs=1e-6)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(cfg, NEW, OLD, ADV, MASK)


def test_masked_tokens_contribute_nothing():
    mask = torch.tensor([[True, True, False, False]])
    garbage = NEW.clone()
    garbage[0, 2:] = 50.0
    a, _ = policy_loss(LossConfig("grpo"), NEW, OLD, ADV, mask)
    b, _ = policy_loss(LossConfig("grpo"), garbage, OLD, ADV, mask)
    assert a.item() == b.item() == pytest.approx((-1.2 - 0.5) / 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "ppo2"}, "choose one of"),
        ({"aggregation": "sum"}, "aggregation"),
        ({"cov_preset": "huge"}, "cov_preset"),
        ({"clip_cov_ratio": 0.0}, r"\(0, 1\]"),
        ({"selection_scope": "batch"}, "micro"),
        ({"steer_lambda_min": 0.0}, "steer_lambda_min"),
        ({"clip_cov_lb": 5.0, "clip_cov_ub": 1.0}, "clip_cov_lb"),
    ],
)
def test_loss_config_rejects_bad_values_with_a_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)


def test_presets_fill_the_cov_ratios():
    assert LossConfig("clip_cov", cov_preset="paper").clip_cov_ratio == 2e-4
    assert LossConfig("kl_cov", cov_preset="paper").kl_cov_ratio == 2e-3
    toy = LossConfig("kl_cov", cov_preset="toy")
    assert toy.kl_cov_ratio == 0.05 and toy.cov_window == "percentile"
    assert LossConfig("clip_cov", cov_preset="toy", clip_cov_ratio=0.1).clip_cov_ratio == 0.1
