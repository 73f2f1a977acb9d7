"""The papers' recipes (`losses.RECIPES`) against the numbers in their official launch scripts, the STEER weight
mappings and dual-clip against the official formulas (re-derived here from the papers' code, not imported), the
`dataclasses.replace` fix for preset-derived values, recipe configs from YAML-like dicts, and the null arm.

Mutations these tests caught (each tried by hand): STEER dual-clip c 10 → 3 in RECIPES, clip_high 0.28 → 0.2,
kl_cov_paper k 2e-3 → 2e-4, the minmax mapping without subtracting min|Ω|, the replace fix removed, dual-clip
only for name="dual_clip" (not for dual_clip=True).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from posttrain_probe.rlvr.config import ConfigError, RLVRConfig, null_arm
from posttrain_probe.rlvr.losses import COV_PRESETS, RECIPES, LossConfig, policy_loss, select_tokens

# ---- constants as the official scripts set them -------------------------------------------------------------
# Cui et al., github.com/PRIME-RL/Entropy-Mechanism-of-RL; scripts read from the mirror
# LiyuanLucasLiu/Entropy-Mechanism-of-RL @ 6e45694c (verl's recipe/entropy/*.sh port has the same values):
CUI_CLIP_COV_EPS_LOW = 1.0  # recipe/dapo/7b_clip_cov.sh l.17  clip_ratio_low=1
CUI_CLIP_COV_EPS_HIGH = 1.0  # recipe/dapo/7b_clip_cov.sh l.18  clip_ratio_high=1
CUI_CLIP_COV_RATIO = 0.0002  # recipe/dapo/7b_clip_cov.sh l.19  clip_cov_ratio=0.0002
CUI_CLIP_COV_LB = 1.0  # recipe/dapo/7b_clip_cov.sh l.20  clip_cov_lb=1.0
CUI_CLIP_COV_UB = 5.0  # recipe/dapo/7b_clip_cov.sh l.21  clip_cov_ub=5.0
CUI_KL_COV_COEF = 1.0  # recipe/dapo/7b_kl_cov.sh l.53  ppo_kl_coef=1
# recipe/dapo/7b_kl_cov.sh l.54  k_percent=0.2, a percentage: verl/trainer/ppo/core_algos.py
# compute_policy_loss_kl_cov takes max(1, int(N * k_percent / 100)) tokens (verl's port: kl_cov_ratio=0.002)
CUI_KL_COV_RATIO = 0.2 / 100
# Hao et al. (STEER), github.com/zz-haooo/STEER @ b31df716:
STEER_CLIP_HIGH = 0.28  # run/run_exp.sh l.57 and run/run_linear.sh l.57  clip_ratio_high=0.28
STEER_CLIP_LOW = 0.2  # run/run_exp.sh l.58  clip_ratio_low=0.2
STEER_DUAL_CLIP_C = 10.0  # run/run_exp.sh l.59  clip_ratio_c=10.0 (always applied by compute_policy_loss_with_entropy)
STEER_EXP_WEIGHTS = (0.8, 1.0)  # run/run_exp.sh l.61-63  token_weight_min=0.8 token_weight_max=1.0 linear=False
STEER_LINEAR_WEIGHTS = (0.8, 1.2)  # run/run_linear.sh l.61-63  token_weight_min=0.8 token_weight_max=1.2 linear=True
STEER_OMEGA_FLOOR = 0.02  # verl/trainer/ppo/core_algos.py compute_token_weights: max(metric_max, 0.02)


def test_clip_cov_and_kl_cov_paper_recipes_are_the_official_scripts():
    c = LossConfig.from_recipe("clip_cov_paper")
    assert (c.name, c.recipe, c.cov_window) == ("clip_cov", "clip_cov_paper", "absolute")
    assert (c.clip_low, c.clip_high) == (CUI_CLIP_COV_EPS_LOW, CUI_CLIP_COV_EPS_HIGH)
    assert (c.clip_cov_ratio, c.clip_cov_lb, c.clip_cov_ub) == (CUI_CLIP_COV_RATIO, CUI_CLIP_COV_LB, CUI_CLIP_COV_UB)
    assert not c.applies_dual_clip
    k = LossConfig.from_recipe("kl_cov_paper")
    assert (k.name, k.kl_cov_ratio, k.kl_cov_coef) == ("kl_cov", CUI_KL_COV_RATIO, CUI_KL_COV_COEF)
    assert COV_PRESETS["paper"] == {
        "clip_cov_ratio": CUI_CLIP_COV_RATIO,
        "cov_window": "absolute",
        "kl_cov_ratio": CUI_KL_COV_RATIO,
    }


def test_steer_recipes_and_their_matched_baseline_are_the_official_scripts():
    for name, variant, (lo, hi) in (
        ("steer_paper", "exp", STEER_EXP_WEIGHTS),
        ("steer_linear_paper", "minmax", STEER_LINEAR_WEIGHTS),
    ):
        c = LossConfig.from_recipe(name)
        assert (c.name, c.steer_variant, c.steer_lambda_min, c.steer_lambda_max) == ("steer", variant, lo, hi)
        assert (c.clip_low, c.clip_high, c.dual_clip, c.dual_clip_c) == (
            STEER_CLIP_LOW, STEER_CLIP_HIGH, True, STEER_DUAL_CLIP_C,
        )  # fmt: skip
        assert c.steer_omega_floor == STEER_OMEGA_FLOOR
    b = LossConfig.from_recipe("steer_baseline_paper")
    assert (b.name, b.clip_low, b.clip_high, b.applies_dual_clip, b.dual_clip_c) == (
        "clip_higher", STEER_CLIP_LOW, STEER_CLIP_HIGH, True, STEER_DUAL_CLIP_C,
    )  # fmt: skip


def _omega_abs(adv, logp, old, ent):
    """|Ω| as STEER's compute_token_weights computes it (probabilities clamped to [1e-8, 1 − 1e-8])."""
    x = logp.exp().clamp(1e-8, 1 - 1e-8)
    return (adv / old.exp().clamp(1e-8, 1.0) * x * (1 - x) * (x.log() + ent)).abs()


def _random_batch(seed: int, shape=(4, 9)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, 5, generator=g)
    old = torch.log_softmax(logits, -1)[..., 0]
    new = torch.log_softmax(logits + 0.3 * torch.randn(*shape, 5, generator=g), -1)[..., 0]  # log π ≤ 0
    adv = torch.randn(shape[0], 1, generator=g).expand(shape).contiguous()
    ent = torch.rand(*shape, generator=g) * 2
    mask = torch.rand(*shape, generator=g) > 0.2
    return new, old, adv, ent, mask


@pytest.mark.parametrize("seed", range(5))
def test_steer_weights_equal_the_official_mappings_on_random_tensors(seed):
    new, old, adv, ent, mask = _random_batch(seed)
    m = _omega_abs(adv, new, old, ent)[mask]
    lo, hi = STEER_LINEAR_WEIGHTS
    linear = (hi - (m - m.min()) * (hi - lo) / (m.max() - m.min())).clamp(lo, hi)
    sel = select_tokens(LossConfig.from_recipe("steer_linear_paper"), new, old, adv, mask, ent)
    assert torch.allclose(sel.pg_weight[mask], linear, atol=1e-5)
    assert (sel.pg_weight[~mask] == 1).all()
    k = -math.log(STEER_EXP_WEIGHTS[0]) / max(float(m.max()), STEER_OMEGA_FLOOR)
    exp = torch.exp(-k * m).clamp(STEER_EXP_WEIGHTS[0], 1.0)
    sel = select_tokens(LossConfig.from_recipe("steer_paper"), new, old, adv, mask, ent)
    assert torch.allclose(sel.pg_weight[mask], exp, atol=1e-5)


def test_minmax_weights_are_the_midpoint_when_all_omegas_are_equal():
    mask = torch.ones(1, 3, dtype=torch.bool)
    logp = torch.log(torch.full((1, 3), 0.5))
    sel = select_tokens(LossConfig.from_recipe("steer_linear_paper"), logp, logp, torch.ones(1, 3), mask, logp * 0)
    assert sel.pg_weight.tolist()[0] == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize("seed", range(3))
def test_steer_paper_loss_is_weighted_dual_clipped_ppo_like_the_official_loss(seed):
    new, old, adv, ent, mask = _random_batch(seed)
    new = (old + 2.5 * (new - old)).clamp(max=0)  # ratios well outside [0.8, 1.28]
    cfg = LossConfig.from_recipe("steer_paper")
    sel = select_tokens(cfg, new, old, adv, mask, ent)
    ratio = (new - old).exp()
    clipped = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - STEER_CLIP_LOW, 1 + STEER_CLIP_HIGH))
    dual = torch.where(adv < 0, torch.minimum(-adv * STEER_DUAL_CLIP_C, clipped), clipped)
    expected = (dual * sel.pg_weight * mask).sum() / mask.sum()
    loss, diag = policy_loss(cfg, new, old, adv, mask, rollout_entropy=ent, selection=sel)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert "dual_clip_frac" in diag
    base, _ = policy_loss(LossConfig.from_recipe("steer_baseline_paper"), new, old, adv, mask)
    assert base.item() == pytest.approx(((dual * mask).sum() / mask.sum()).item(), abs=1e-6)


def test_dual_clip_caps_steer_only_when_asked():
    old, new = torch.log(torch.tensor([[0.05]])), torch.log(torch.tensor([[0.9]]))  # ρ = 18, A < 0
    adv, mask, ent = torch.tensor([[-1.0]]), torch.ones(1, 1, dtype=torch.bool), torch.tensor([[0.5]])
    plain, _ = policy_loss(LossConfig("steer"), new, old, adv, mask, rollout_entropy=ent)
    capped, _ = policy_loss(
        LossConfig("steer", dual_clip=True, dual_clip_c=10.0), new, old, adv, mask, rollout_entropy=ent
    )
    lam = 0.8  # the only token has the max |Ω|
    assert plain.item() == pytest.approx(18 * lam, rel=1e-4)
    assert capped.item() == pytest.approx(10 * lam, rel=1e-4)
    with pytest.raises(ValueError, match="kl_cov"):
        LossConfig("kl_cov", dual_clip=True)


def test_kl_cov_paper_penalizes_two_tenths_of_a_percent_and_clip_cov_paper_does_not_clip_low_ratios():
    g = torch.Generator().manual_seed(0)
    logp, adv = -torch.rand(1, 5000, generator=g) * 3, torch.randn(1, 5000, generator=g)
    mask = torch.ones_like(logp, dtype=torch.bool)
    sel = select_tokens(LossConfig.from_recipe("kl_cov_paper"), logp, logp, adv, mask)
    assert int(sel.kl_mask.sum()) == 10  # max(1, int(5000 * 0.2 / 100))
    # ε = 1: ρ = 0.3 with A < 0 is not clipped (grpo's ε = 0.2 would clip it)
    old = torch.log(torch.tensor([[0.5]]))
    _, diag = policy_loss(
        LossConfig.from_recipe("clip_cov_paper"), old + math.log(0.3), old, -torch.ones(1, 1), mask[:, :1]
    )
    assert diag["clip_frac"] == 0.0
    _, diag = policy_loss(LossConfig("grpo"), old + math.log(0.3), old, -torch.ones(1, 1), mask[:, :1])
    assert diag["clip_frac"] == 1.0


def test_replace_re_derives_preset_values_and_keeps_explicit_ones():
    toy = LossConfig("clip_cov")
    paper = dataclasses.replace(toy, cov_preset="paper")
    assert (paper.clip_cov_ratio, paper.cov_window, paper.kl_cov_ratio) == (2e-4, "absolute", 2e-3)
    back = dataclasses.replace(paper, cov_preset="toy")
    assert back == toy
    mine = dataclasses.replace(LossConfig("kl_cov", kl_cov_ratio=0.1), cov_preset="paper")
    assert mine.kl_cov_ratio == 0.1 and mine.clip_cov_ratio == 2e-4
    assert dataclasses.replace(LossConfig("grpo"), name="clip_higher").clip_high == 0.28
    assert dataclasses.replace(LossConfig("grpo"), clip_low=0.1).clip_high == 0.1
    assert dataclasses.replace(LossConfig("grpo", clip_high=0.3), clip_low=0.1).clip_high == 0.3
    # serialised configs hold resolved values and no bookkeeping
    d = LossConfig.from_recipe("steer_paper").to_dict()
    assert "_filled" not in d and LossConfig(**d) == LossConfig.from_recipe("steer_paper")


def test_recipes_from_yaml_like_dicts_and_the_null_arm():
    cfg = RLVRConfig(loss="steer_paper")
    assert cfg.loss == LossConfig.from_recipe("steer_paper")
    cfg = RLVRConfig.from_dict({"loss": {"recipe": "kl_cov_paper", "kl_cov_coef": 5.0}, "seed": 3})
    assert (cfg.loss.recipe, cfg.loss.kl_cov_ratio, cfg.loss.kl_cov_coef) == ("kl_cov_paper", CUI_KL_COV_RATIO, 5.0)
    again = RLVRConfig.from_dict(cfg.to_dict())
    assert again == cfg and "_filled" not in cfg.to_dict()["loss"]
    with pytest.raises(ConfigError, match="choose one of"):
        RLVRConfig.from_dict({"loss": {"recipe": "steer_official"}})
    null = null_arm(cfg)
    assert null.lr == pytest.approx(cfg.lr * 1.01) and null.arm == "null" and null.seed == cfg.seed
    assert null.loss == cfg.loss
    assert set(RECIPES) >= {"steer_paper", "steer_linear_paper", "steer_baseline_paper", "clip_cov_paper"}


def test_recipe_deviations_name_what_differs_from_the_paper_script():
    from posttrain_probe.rlvr.losses import recipe_deviations

    assert recipe_deviations(LossConfig.from_recipe("kl_cov_paper"), "kl_cov_paper") == {}
    # verl's PolicyLossConfig defaults for KL-Cov (kl_cov_ratio 2e-4, ppo_kl_coef 0.1) are not the 7B script's
    verl_default = LossConfig("kl_cov", kl_cov_ratio=2e-4, kl_cov_coef=0.1)
    assert recipe_deviations(verl_default, "kl_cov_paper") == {
        "kl_cov_ratio": (2e-4, CUI_KL_COV_RATIO),
        "kl_cov_coef": (0.1, CUI_KL_COV_COEF),
    }
    steer_verl_default = LossConfig("steer", dual_clip=True, dual_clip_c=3.0)  # verl: clip 0.2/0.2, c = 3
    assert set(recipe_deviations(steer_verl_default, "steer_paper")) == {"clip_high", "dual_clip_c"}
