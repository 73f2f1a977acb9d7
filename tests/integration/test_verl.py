"""posttrain_probe.integrations.verl against the installed verl: registry, signature, values, gradients, metrics.

verl cannot share the main environment (it pins an older transformers), so this module is skipped there;
`.ci/verl` builds a separate environment with verl and runs only this file.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip(
    "verl.trainer.ppo.core_algos",
    reason="verl is not installed here (it pins transformers<5.11); .ci/verl runs this file in its own venv",
)

from tensordict import TensorDict  # noqa: E402  (a verl dependency)
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import FSDPActorConfig  # noqa: E402

from posttrain_probe.integrations import verl as ours  # noqa: E402
from posttrain_probe.rlvr.losses import LossConfig, policy_loss  # noqa: E402

B, T = 6, 9
PREFIX = ours.METRIC_PREFIX


def batch(seed: int = 0, spread: float = 1.0) -> dict[str, torch.Tensor]:
    """Random padded response tensors as verl hands them to a policy loss (ρ ≠ 1, GRPO-style advantages)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 7, 5, 9, 3, 8])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    old = -torch.rand(B, T, generator=g) * 3 * spread - 0.05
    new = old + 0.3 * torch.randn(B, T, generator=g)
    adv = (torch.randn(B, 1, generator=g) * spread).expand(B, T) * mask
    entropy = torch.rand(B, T, generator=g) * 2
    is_weights = 0.5 + torch.rand(B, T, generator=g)
    return {"old": old, "new": new, "adv": adv.contiguous(), "mask": mask, "entropy": entropy, "is_w": is_weights}


def actor_config(loss_mode: str, agg: str = "token-mean", info: dict | None = None, **policy) -> FSDPActorConfig:
    cfg = FSDPActorConfig(
        strategy="fsdp",
        rollout_n=4,
        ppo_micro_batch_size_per_gpu=2,
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=1e9,  # verl's dual-clip out of the way, so vanilla is plain PPO clipping like our grpo
        loss_agg_mode=agg,
        policy_loss=ours.PolicyLossConfig(loss_mode=loss_mode, **policy),
    )
    cfg.global_batch_info.update(info or {})
    return cfg


def call(fn, b: dict[str, torch.Tensor], cfg: FSDPActorConfig, is_weights: bool = False, **extra):
    """fn called exactly as verl.workers.utils.losses.ppo_loss calls a registered loss; returns loss, grad."""
    logp = b["new"].clone().requires_grad_(True)
    loss, metrics = fn(
        old_log_prob=b["old"],
        log_prob=logp,
        advantages=b["adv"],
        response_mask=b["mask"],
        loss_agg_mode=cfg.loss_agg_mode,
        config=cfg,
        rollout_is_weights=b["is_w"] if is_weights else None,
        **extra,
    )
    loss.backward()
    return loss.detach(), logp.grad, metrics


def reference(cfg: LossConfig, b: dict[str, torch.Tensor], **kwargs):
    logp = b["new"].clone().requires_grad_(True)
    loss, diag = policy_loss(cfg, logp, b["old"], b["adv"], b["mask"], **kwargs)
    loss.backward()
    return loss.detach(), logp.grad, diag


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=tol, atol=tol)


def test_our_losses_are_in_verls_registry_and_steer_is_selectable_by_name():
    assert set(ours.REGISTERED) == set(ours.VERL_LOSSES)
    for verl_name, name in ours.VERL_LOSSES.items():
        fn = core_algos.get_policy_loss_fn(verl_name)
        assert fn is core_algos.POLICY_LOSS_REGISTRY[verl_name]
        assert fn._posttrain_probe_loss == name
    # verl's own Cov losses are left alone
    assert getattr(core_algos.get_policy_loss_fn("clip_cov"), "_posttrain_probe_loss", None) is None
    assert ours.register() == list(ours.VERL_LOSSES)  # idempotent


@pytest.mark.parametrize("variant", ["exp", "linear"])
def test_steer_through_verls_signature_equals_our_loss_values_and_gradients(variant):
    b = batch(1)
    info = {"dp_size": 1, "batch_num_tokens": 2 * int(b["mask"].sum()), "global_batch_size": 2 * B}
    cfg = actor_config("steer", info=info, steer_variant=variant, steer_lambda_min=0.7, steer_omega_floor=0.01)
    loss, grad, metrics = call(core_algos.get_policy_loss_fn("steer"), b, cfg, rollout_entropy=b["entropy"])
    want = LossConfig(
        name="steer", clip_low=0.2, clip_high=0.28, steer_variant=variant, steer_lambda_min=0.7, steer_omega_floor=0.01
    )
    ref_loss, ref_grad, diag = reference(
        want, b, rollout_entropy=b["entropy"], total_tokens=float(info["batch_num_tokens"])
    )
    assert close(loss, ref_loss) and close(grad, ref_grad)
    assert diag["touched_frac"] > 0 and 0.7 <= diag["steer_lambda_mean"] < 1  # STEER did reweight here
    for key in ours.COMMON_METRICS + ("omega_abs_max", "steer_lambda_mean"):
        assert metrics[PREFIX + key] == pytest.approx(diag[key], rel=1e-6, abs=1e-9)
    for key in ("dH_pred_cov", "dH_pred_omega", "dH_realized_is"):
        assert math.isfinite(metrics[PREFIX + key])
    assert metrics["actor/pg_clipfrac"] == pytest.approx(diag["clip_frac"])
    assert all(isinstance(v, float) for v in metrics.values())


def test_steer_refuses_to_run_without_entropies():
    with pytest.raises(ValueError, match="calculate_entropy=True"):
        call(core_algos.get_policy_loss_fn("steer"), batch(), actor_config("steer"))


@pytest.mark.parametrize(
    "agg", ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
)
@pytest.mark.parametrize("global_info", [False, True])
def test_ptp_grpo_equals_verls_vanilla_under_every_aggregation(agg, global_info):
    """Our grpo and verl's own vanilla (dual-clip off) agree in value and gradient, so the aggregation mapping
    (loss_agg_mode + global batch info → losses.aggregate) reproduces verl's agg_loss."""
    b = batch(2)
    info = (
        {"dp_size": 2, "batch_num_tokens": 60, "global_batch_size": 16, "loss_scale_factor": 12} if global_info else {}
    )
    for is_weights in (False, True):
        cfg = actor_config("ptp_grpo", agg, info)
        loss, grad, metrics = call(core_algos.get_policy_loss_fn("ptp_grpo"), b, cfg, is_weights)
        verl_loss, verl_grad, verl_metrics = call(core_algos.get_policy_loss_fn("vanilla"), b, cfg, is_weights)
        assert close(loss, verl_loss) and close(grad, verl_grad), (agg, is_weights)
        assert metrics["actor/pg_clipfrac"] == pytest.approx(verl_metrics["actor/pg_clipfrac"], abs=1e-6)
        assert metrics["actor/ppo_kl"] == pytest.approx(verl_metrics["actor/ppo_kl"], abs=1e-6)


def test_ptp_kl_cov_and_ptp_clip_cov_equal_verls_reference_implementations():
    """On the paper's absolute Cov window our Clip-Cov / KL-Cov pick what verl's do (same global RNG draw)."""
    b = batch(3, spread=3.0)
    policy = {"clip_cov_ratio": 0.1, "kl_cov_ratio": 0.1, "ppo_kl_coef": 0.5}
    for ptp, theirs in (("ptp_kl_cov", "kl_cov"), ("ptp_clip_cov", "clip_cov")):
        cfg = actor_config(ptp, **policy)
        torch.manual_seed(7)
        loss, grad, metrics = call(core_algos.get_policy_loss_fn(ptp), b, cfg)
        torch.manual_seed(7)
        verl_loss, verl_grad, _ = call(core_algos.get_policy_loss_fn(theirs), b, cfg)
        assert metrics[PREFIX + "touched_frac"] > 0, ptp  # the intervention did something on this batch
        assert close(loss, verl_loss) and close(grad, verl_grad), ptp


def test_clip_cov_percentile_window_and_is_weights_go_through_our_functions():
    b = batch(4)
    policy = {"clip_cov_ratio": 0.1, "cov_window": "percentile", "cov_percentile_low": 80.0}
    cfg = actor_config("ptp_clip_cov", **policy)
    torch.manual_seed(3)
    loss, grad, metrics = call(core_algos.get_policy_loss_fn("ptp_clip_cov"), b, cfg)
    want = LossConfig(name="clip_cov", clip_low=0.2, clip_high=0.28, clip_cov_ratio=0.1, cov_window="percentile",
                      cov_percentile_low=80.0)  # fmt: skip
    torch.manual_seed(3)
    ref_loss, ref_grad, diag = reference(want, b)
    assert close(loss, ref_loss) and close(grad, ref_grad)
    assert metrics[PREFIX + "candidates"] == diag["candidates"] > 0
    with pytest.raises(ValueError, match="rollout correction"):
        call(core_algos.get_policy_loss_fn("ptp_kl_cov"), b, actor_config("ptp_kl_cov"), is_weights=True)
    with pytest.raises(ValueError, match="steer_variant"):
        ours.PolicyLossConfig(loss_mode="steer", steer_variant="cubic")


def test_hydra_target_builds_our_policy_loss_config_with_extra_keys():
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    node = {
        "_target_": "verl.workers.config.FSDPActorConfig", "strategy": "fsdp", "rollout_n": 4,
        "ppo_micro_batch_size_per_gpu": 2,
        "policy_loss": {
            "_target_": "posttrain_probe.integrations.verl.PolicyLossConfig", "loss_mode": "steer",
            "steer_lambda_min": 0.6,
        },
    }  # fmt: skip
    cfg = omega_conf_to_dataclass(OmegaConf.create(node))
    assert isinstance(cfg.policy_loss, ours.PolicyLossConfig) and cfg.policy_loss.steer_lambda_min == 0.6
    assert ours.loss_config("steer", cfg, "token-mean", batch()["mask"])[0].steer_lambda_min == 0.6


def _verl_micro_batch(b: dict[str, torch.Tensor], info: dict) -> tuple[dict, TensorDict, torch.Tensor]:
    """model_output and data as verl's FSDP engine hands them to ppo_loss: flat (no-padding) log-probs and
    entropies over all tokens of each prompt+response, padded prompts/responses/attention_mask in `data`."""
    g = torch.Generator().manual_seed(11)
    prompt_lens = torch.tensor([3, 2, 4, 1, 3, 2])
    resp_lens = b["mask"].sum(-1)
    P = int(prompt_lens.max())
    attn = torch.zeros(B, P + T, dtype=torch.long)
    for i in range(B):
        attn[i, P - prompt_lens[i] : P + resp_lens[i]] = 1
    seq_lens = prompt_lens + resp_lens
    n = int(seq_lens.sum())
    flat_logp = -torch.rand(n, generator=g)
    flat_ent = torch.rand(n, generator=g)
    ends = seq_lens.cumsum(0)
    for i in range(B):  # position j of a sequence holds the log-prob of token j+1
        span = slice(int(ends[i] - resp_lens[i] - 1), int(ends[i] - 1))
        flat_logp[span] = b["new"][i, : resp_lens[i]]
        flat_ent[span] = b["entropy"][i, : resp_lens[i]]
    flat_logp.requires_grad_(True)
    data = TensorDict(
        {
            "prompts": torch.zeros(B, P, dtype=torch.long),
            "responses": torch.zeros(B, T, dtype=torch.long),
            "attention_mask": attn,
            "response_mask": b["mask"].long(),
            "old_log_probs": b["old"],
            "advantages": b["adv"],
        },
        batch_size=[B],
    )
    tu.assign_non_tensor(data, **info)
    return {"log_probs": flat_logp, "entropy": flat_ent}, data, flat_logp


def test_verls_own_ppo_loss_call_site_hands_our_steer_the_entropies_and_logs_our_metrics():
    """End to end through verl.workers.utils.losses.ppo_loss (the function verl's actor binds as its loss):
    the installed wrapper passes model_output["entropy"] to steer, and our metrics come back."""
    from verl.workers.utils import losses as verl_losses

    assert getattr(verl_losses.ppo_loss, "_posttrain_probe_wraps", None) is not None
    b = batch(5)
    info = {"dp_size": 1, "batch_num_tokens": int(b["mask"].sum()) + 5, "global_batch_size": B}
    cfg = actor_config("steer", steer_lambda_min=0.75)
    model_output, data, flat = _verl_micro_batch(b, info)
    loss, metrics = verl_losses.ppo_loss(config=cfg, model_output=model_output, data=data)
    loss.backward()
    want = LossConfig(name="steer", clip_low=0.2, clip_high=0.28, steer_lambda_min=0.75)
    ref_loss, ref_grad, diag = reference(
        want, b, rollout_entropy=b["entropy"] * b["mask"], total_tokens=info["batch_num_tokens"]
    )
    assert close(loss.detach(), ref_loss)
    resp_lens = b["mask"].sum(-1)
    ends = (torch.tensor([3, 2, 4, 1, 3, 2]) + resp_lens).cumsum(0)
    for i in range(B):
        span = slice(int(ends[i] - resp_lens[i] - 1), int(ends[i] - 1))
        assert close(flat.grad[span], ref_grad[i, : resp_lens[i]])
    values = {k: m.aggregate() for k, m in metrics.items() if hasattr(m, "aggregate")}
    assert values[PREFIX + "steer_lambda_mean"] == pytest.approx(diag["steer_lambda_mean"], rel=1e-6)
    for key in ("dH_pred_cov", "dH_pred_omega", "dH_realized_is", "touched_frac", "cov_mean"):
        assert PREFIX + key in values
    assert values[PREFIX + "H_rollout_time"] == 0  # the legacy layout carries no rollout-time entropy
    assert "actor/pg_loss" in values


def test_a_v1_micro_batch_with_the_rollout_time_entropy_field_gives_steer_that_entropy():
    """verl's v1 trainer stores the old-log-prob pass's entropy as the response-shaped field "entropy"; when a
    micro-batch carries it (nested, old_log_probs' layout), STEER uses it, not the current entropy."""
    from verl.workers.utils import losses as verl_losses

    b = batch(6)
    model_output, padded, flat = _verl_micro_batch(b, {})
    lens = b["mask"].sum(-1).tolist()

    def nested(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        return torch.nested.as_nested_tensor([x[i, :n] for i, n in enumerate(lengths)], layout=torch.jagged)

    prompt_lens = [3, 2, 4, 1, 3, 2]
    rollout_entropy = b["entropy"] + 0.5  # differs from model_output["entropy"] (the current policy's)
    data = TensorDict(
        {
            "prompts": nested(torch.ones(B, 4, dtype=torch.long), prompt_lens),
            "responses": nested(torch.ones(B, T, dtype=torch.long), lens),
            "response_mask": nested(b["mask"].long(), lens),
            "old_log_probs": nested(b["old"], lens),
            "advantages": nested(b["adv"], lens),
            "entropy": nested(rollout_entropy, lens),
        },
        batch_size=[B],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    cfg = actor_config("steer")
    loss, metrics = verl_losses.ppo_loss(config=cfg, model_output=model_output, data=data)
    want = LossConfig(name="steer", clip_low=0.2, clip_high=0.28)
    ref_loss, _, diag = reference(want, b, rollout_entropy=rollout_entropy * b["mask"])
    current_loss, _, _ = reference(want, b, rollout_entropy=b["entropy"] * b["mask"])
    assert close(loss.detach(), ref_loss) and not close(ref_loss, current_loss)
    values = {k: m.aggregate() for k, m in metrics.items() if hasattr(m, "aggregate")}
    assert values[PREFIX + "H_rollout_time"] == 1
    assert values[PREFIX + "omega_abs_max"] == pytest.approx(diag["omega_abs_max"], rel=1e-6)
    # a field with another layout (here: full prompt+response sequences) is not mistaken for it
    wrong = data.clone()
    wrong["entropy"] = nested(torch.rand(B, 13), [p + n for p, n in zip(prompt_lens, lens)])
    assert ours.rollout_time_entropy(wrong) is None
    assert ours.rollout_time_entropy(padded) is None


def test_dH_realized_is_estimates_the_entropy_change_of_a_known_distribution_change():
    """The importance-sampling ΔH estimate against the exact ΔH of two categorical policies."""
    g = torch.Generator().manual_seed(0)
    logits_old = torch.randn(50, 12, generator=g)
    logits_new = logits_old + 0.3 * torch.randn(50, 12, generator=g)
    lp_old, lp_new = torch.log_softmax(logits_old, -1), torch.log_softmax(logits_new, -1)
    exact = float(((-lp_new.exp() * lp_new).sum(-1) - (-lp_old.exp() * lp_old).sum(-1)).mean())
    tokens = torch.multinomial(lp_old.exp(), 4000, replacement=True, generator=g)  # (50, 4000) a ∼ π_old
    old, new = lp_old.gather(1, tokens), lp_new.gather(1, tokens)
    mask = torch.ones_like(old, dtype=torch.bool)
    est = ours.entropy_metrics(old, new, torch.zeros_like(old), mask, None)["dH_realized_is"]
    assert est == pytest.approx(exact, abs=0.1 * abs(exact) + 2e-3)
