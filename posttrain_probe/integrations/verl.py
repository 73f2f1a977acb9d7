"""verl integration: our token losses and entropy-dynamics metrics inside a verl PPO/GRPO run.

Written against verl 0.9.1: its registry `verl.trainer.ppo.core_algos.register_policy_loss` and its one call
site, `verl.workers.utils.losses.ppo_loss`, which calls the registered function with the keywords
(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights) once per
micro-batch and expects (scalar loss, dict of float metrics). This module needs verl; `import posttrain_probe`
never imports it. Importing it

1. registers these losses, each a thin adapter around `posttrain_probe.rlvr.losses.policy_loss` (no loss
   math here):
       steer          our STEER (verl 0.9.1 has none; if a verl version ships its own "steer", that one is
                      kept, with a warning, and ours stays reachable as ptp_steer)
       ptp_steer      the same, under a name that cannot clash
       ptp_grpo       our grpo: PPO clipping without dual-clip (verl's "vanilla" also applies clip_ratio_c to
                      A < 0 tokens); the reference arm for a STEER run
       ptp_clip_cov   our Clip-Cov (verl's own "clip_cov" is untouched; ours adds the percentile Cov window)
       ptp_kl_cov     our KL-Cov (verl's "kl_cov" is untouched)
2. wraps verl's `ppo_loss` so that the token entropies it already holds reach our losses (see "Entropy").

Overrides of a verl GRPO run (docs/verl.md has the whole command):
    actor_rollout_ref.model.external_lib=posttrain_probe.integrations.verl   # imported in every worker
    actor_rollout_ref.actor.policy_loss.loss_mode=steer
    actor_rollout_ref.actor.calculate_entropy=True                          # H_i for STEER's Ω
Hyper-parameters come from verl's keys where verl has one: ε_low / ε_high from actor.clip_ratio_low /
clip_ratio_high, STEER's dual-clip c from actor.clip_ratio_c (STEER's official loss always applies dual-clip),
and policy_loss.clip_cov_ratio, clip_cov_lb, clip_cov_ub, kl_cov_ratio, ppo_kl_coef (β of KL-Cov) with verl's
defaults (2e-4, 1, 5, 2e-4, 0.1).

Paper scripts vs verl's defaults: where a run's settings differ from the paper's official script
(`losses.RECIPES`: steer_paper / steer_linear_paper, clip_cov_paper, kl_cov_paper) each of our losses warns ONCE
per process with the differing keys and the override that restores the script's value. verl's defaults differ
from the scripts in: STEER clip_ratio_high 0.2 (script 0.28) and clip_ratio_c 3 (script 10); Clip-Cov
clip_ratio 0.2 (script 1); KL-Cov kl_cov_ratio 2e-4 (7B script 2e-3; the 32B script 2e-4) and ppo_kl_coef 0.1
(script 1). Silence it only by setting the keys (or `warnings.filterwarnings`). Ours (steer_variant, steer_lambda_min,
steer_lambda_max, steer_omega_floor, cov_window, cov_percentile_low, cov_percentile_high; defaults as in
`LossConfig`) need our config class, which verl instantiates in every worker (importing this module too):
    actor_rollout_ref.actor.policy_loss._target_=posttrain_probe.integrations.verl.PolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.steer_lambda_min=0.7

What maps how:
- Aggregation: verl's loss_agg_mode and its global batch info (dp_size, batch_num_tokens, global_batch_size,
  loss_scale_factor in config.global_batch_info) become `losses.aggregate` arguments with the same result:
  token-mean → token-mean over batch_num_tokens/dp_size; token-sum → token-mean over 1/dp_size;
  seq-mean-token-mean → seq-mean-token-mean over global_batch_size/dp_size sequences; seq-mean-token-sum and
  seq-mean-token-sum-norm → constant-normalized with constant 1 or loss_scale_factor (default: the padded
  response length). So the micro-batch losses add up to verl's mini-batch loss, as with verl's own losses.
- Selection scope: verl calls the loss per micro-batch, so Clip-Cov / KL-Cov / STEER select within the
  micro-batch (the reference code's scope, our selection_scope="micro"); results depend on
  ppo_micro_batch_size_per_gpu (and on use_dynamic_bsz packing) as they do in the reference code.
- Clip-Cov's random picks use torch's global generator (verl seeds it), not our trainer's derived ones.
- rollout_is_weights (verl's rollout correction) multiply the policy-gradient term per token, as verl's losses
  do; with KL-Cov, where verl weights the |log ρ| term too, they are refused with an error.
- Unlike verl's vanilla, log ρ is not clamped to ±20 before exp (our trainer does not clamp either).

Entropy, the one real limitation: STEER's Ω_i = (A_i/π_old,i)·p_i(1−p_i)(ln p_i + H_i) needs H_i, the token
entropy of the rollout policy, and verl's `ppo_loss` hands the registered loss no entropy at all. The wrapper
installed here (a context variable around the call; the registered function keeps verl's signature) passes
the best entropy the micro-batch has, and logs which one it was as H_rollout_time (1 or 0, averaged):
- rollout-time (exact, H_rollout_time = 1): verl computes it in the old-log-prob pass. The legacy trainer
  (trainer.use_v1=False, `RayPPOTrainer`) drops it from the batch ("entropys" popped) before the update; the
  default v1 trainer stores it as the batch field "entropy" with old_log_probs' layout. When that field
  reaches the actor's micro-batch with exactly that layout, it is used (`rollout_time_entropy`). That the v1
  trainer's TransferQueue hands the field to the actor was read from the verl 0.9.1 source, not observed in
  a run (that needs GPUs and a rollout engine); the H_rollout_time metric shows it per run.
- else the CURRENT policy's entropy at the same positions (`model_output["entropy"]`, present when
  actor.calculate_entropy=True or entropy_coeff != 0), detached: equal to the rollout-time entropy on each
  step's first mini-batch (π_θ = π_old), different by O(learning rate) on later ones (H_rollout_time = 0).
  Our embedded trainer always uses the rollout-time entropy.
Without either, `steer` raises an error that names the override. A caller that has the rollout-time entropy
can pass it: every adapter also takes `rollout_entropy=`, and `token_entropy(H)` sets it for a block.
Not covered: verl's distillation loss (`distillation_ppo_loss`, which does not go through `ppo_loss`) and an
actor whose loss function was bound before this module was imported (then `steer` raises, it does not guess).

Metrics, returned as `actor/posttrain_probe/<name>` (verl averages them over micro-batches and ranks and logs
them with its own `actor/*` metrics), plus verl's usual actor/pg_clipfrac and actor/ppo_kl:
    clip_frac, clip_low_frac, clip_high_frac, touched_frac, abs_log_ratio,
    cov_mean, cov_pos_frac, cov_pos_mean, cov_neg_mean            as in the embedded trainer's metrics.jsonl
    omega_abs_max, steer_lambda_mean (STEER); cov_window_low, cov_window_high, candidates (Clip-Cov)
    dH_pred_cov      −mean Cov_i, Cov with log π_old (the trainer's predictor, here per micro-batch)
    dH_pred_omega    −mean Ω_i with p = π_old and H as above (only when entropies reach the loss)
    H_rollout_time   1 when H was the rollout-time entropy, 0 when the current one (only when entropies reach it)
    dH_realized_is   mean_i [log π_old,i − ρ_i log π_θ,i]: an unbiased importance-sampling estimate of
                     H(π_θ) − H(π_old) at the micro-batch's positions (a_i ∼ π_old, and
                     E_{a∼π_old}[ρ(a) log π_θ(a)] = −H(π_θ)); its noise scales with |ρ − 1|, not with H.
The trainer's dH_realized re-scores a step's tokens after ALL its mini-batches; verl has no hook after
update_actor, so that exact value is not available here. π_θ is the policy this micro-batch trains: the
estimate is the change made by the step's earlier mini-batches (and epochs), 0 on the first, and it inherits
the small mismatch between verl's rollout engine (which sampled a_i) and the trainer's π_old.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

try:
    from verl.trainer.ppo import core_algos
    from verl.workers.config import PolicyLossConfig as _VerlPolicyLossConfig
except ImportError as e:  # pragma: no cover - exercised only where verl is missing
    raise ImportError(
        "posttrain_probe.integrations.verl needs verl (written against verl 0.9.1): pip install 'verl==0.9.1' in "
        f"the environment that runs verl; `import posttrain_probe` itself does not need it ({e})"
    ) from e

from posttrain_probe.rlvr.entropy import centred_cov, masked_mean, predicted_entropy_change, steer_omega
from posttrain_probe.rlvr.losses import (
    PAPER_RECIPE_OF,
    LossConfig,
    policy_loss,
    recipe_deviations,
    select_tokens,
)

# verl loss_mode → our loss name
VERL_LOSSES = {
    "steer": "steer",
    "ptp_steer": "steer",
    "ptp_grpo": "grpo",
    "ptp_clip_cov": "clip_cov",
    "ptp_kl_cov": "kl_cov",
}
METRIC_PREFIX = "actor/posttrain_probe/"
COMMON_METRICS = (
    "clip_frac", "clip_low_frac", "clip_high_frac", "touched_frac", "abs_log_ratio",
    "cov_mean", "cov_pos_frac", "cov_pos_mean", "cov_neg_mean",
)  # fmt: skip
LOSS_METRICS = {
    "grpo": (),
    "steer": ("omega_abs_max", "steer_lambda_mean"),
    "clip_cov": ("cov_window_low", "cov_window_high", "candidates"),
    "kl_cov": (),
}
VERL_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")

_TOKEN_ENTROPY: ContextVar[tuple[torch.Tensor, bool] | None] = ContextVar("posttrain_probe_verl_entropy", default=None)
_WRAPS = "_posttrain_probe_wraps"
_OURS = "_posttrain_probe_loss"


@dataclasses.dataclass
class PolicyLossConfig(_VerlPolicyLossConfig):
    """verl's PolicyLossConfig plus our hyper-parameters (defaults as in `LossConfig`). Select it with
    `actor_rollout_ref.actor.policy_loss._target_=posttrain_probe.integrations.verl.PolicyLossConfig`."""

    steer_variant: str = "exp"
    steer_lambda_min: float = 0.8
    steer_lambda_max: float = 1.0
    steer_omega_floor: float = 0.02
    cov_window: str = "absolute"
    cov_percentile_low: float = 90.0
    cov_percentile_high: float = 100.0

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        _ = LossConfig(  # validates our fields with LossConfig's own messages
            steer_variant=self.steer_variant,
            steer_lambda_min=self.steer_lambda_min,
            steer_lambda_max=self.steer_lambda_max,
            steer_omega_floor=self.steer_omega_floor,
            cov_window=self.cov_window,
            cov_percentile_low=self.cov_percentile_low,
            cov_percentile_high=self.cov_percentile_high,
        )


_DEFAULTS = PolicyLossConfig()


# ------------------------------------------------------------------------------------------- entropy hook


@contextmanager
def token_entropy(entropy: torch.Tensor | None, rollout_time: bool = True) -> Iterator[None]:
    """Within the block, our registered losses take `entropy` (B, T), padded like the loss's tensors, as
    STEER's H_i when the caller passes no `rollout_entropy=`; `rollout_time` says whether it is the rollout
    policy's entropy (logged as H_rollout_time)."""
    token = _TOKEN_ENTROPY.set(None if entropy is None else (entropy.detach(), rollout_time))
    try:
        yield
    finally:
        _TOKEN_ENTROPY.reset(token)


def _loss_mode(config: Any) -> str | None:
    policy = _get(config, "policy_loss", None)
    return None if policy is None else _get(policy, "loss_mode", None)


def rollout_time_entropy(data: Any) -> torch.Tensor | None:
    """The old-log-prob pass's token entropy when verl's micro-batch `data` carries it with exactly the layout
    of `old_log_probs` (response tokens only): the field "entropy" that verl 0.9.1's v1 trainer stores, or
    "entropys"; padded as `ppo_loss` pads old_log_probs. None when absent or laid out otherwise."""
    keys = set(data.keys())
    if "old_log_probs" not in keys:
        return None
    old = data["old_log_probs"]
    for key in ("entropy", "entropys"):
        if key not in keys or not isinstance(data[key], torch.Tensor):
            continue
        ent = data[key]
        if ent.is_nested != old.is_nested:
            continue
        if ent.is_nested:
            same = ent.offsets().shape == old.offsets().shape and bool((ent.offsets() == old.offsets()).all())
        else:
            same = ent.shape == old.shape
        if same:
            return data.select(key, "old_log_probs").to_padded_tensor()[key]
    return None


def wrap_ppo_loss(ppo_loss: Callable[..., Any]) -> Callable[..., Any]:
    """verl's `ppo_loss(config, model_output, data, dp_group=None)`, unchanged, except that when the loss mode
    is one of ours the token entropies reach it through `token_entropy`: the rollout-time ones when the
    micro-batch carries them (`rollout_time_entropy`), else the current policy's from `model_output["entropy"]`,
    padded like the loss's other tensors."""
    if getattr(ppo_loss, _WRAPS, None) is not None:
        return ppo_loss

    @functools.wraps(ppo_loss)
    def ppo_loss_with_entropy(config: Any, model_output: Any, data: Any, dp_group: Any = None) -> Any:
        if _loss_mode(config) not in VERL_LOSSES:
            return ppo_loss(config=config, model_output=model_output, data=data, dp_group=dp_group)
        entropy, rollout_time = rollout_time_entropy(data), True
        if entropy is None and model_output.get("entropy", None) is not None:
            from verl.workers.utils.padding import no_padding_2_padding

            entropy, rollout_time = no_padding_2_padding(model_output["entropy"], data), False
        with token_entropy(None if entropy is None else entropy.float(), rollout_time):
            return ppo_loss(config=config, model_output=model_output, data=data, dp_group=dp_group)

    setattr(ppo_loss_with_entropy, _WRAPS, ppo_loss)
    return ppo_loss_with_entropy


def install_entropy_hook() -> None:
    """Route verl's `ppo_loss` through `wrap_ppo_loss`, in `verl.workers.utils.losses` and in
    `verl.workers.engine_workers` (which imported the name) when that is loaded. Idempotent."""
    from verl.workers.utils import losses as verl_losses

    original = getattr(verl_losses.ppo_loss, _WRAPS, None) or verl_losses.ppo_loss
    wrapped = wrap_ppo_loss(verl_losses.ppo_loss)
    verl_losses.ppo_loss = wrapped
    workers = sys.modules.get("verl.workers.engine_workers")
    if workers is not None and getattr(workers, "ppo_loss", None) is original:
        workers.ppo_loss = wrapped


# -------------------------------------------------------------------------------------------- the losses


def _get(obj: Any, key: str, default: Any) -> Any:
    """obj.key for a verl BaseConfig, DictConfig or dict; `default` when absent or None."""
    if obj is None:
        return default
    value = obj.get(key, None) if hasattr(obj, "get") else getattr(obj, key, None)
    return default if value is None else value


def aggregation_args(
    loss_agg_mode: str, mask: torch.Tensor, batch_info: dict[str, Any] | None = None
) -> tuple[str, int | None, float | None, float | None]:
    """verl's loss_agg_mode and global batch info → (aggregation, agg_constant, total_tokens, total_seqs) of
    `losses.aggregate`, giving the value of verl's `agg_loss` on the same tensors (module docstring)."""
    info = batch_info or {}
    dp = int(_get(info, "dp_size", 1))
    n_tokens, n_seqs = _get(info, "batch_num_tokens", None), _get(info, "global_batch_size", None)
    if loss_agg_mode not in VERL_AGG_MODES:
        raise ValueError(
            f"loss_agg_mode={loss_agg_mode!r} is unknown to verl; choose one of {', '.join(VERL_AGG_MODES)}"
        )
    if loss_agg_mode == "token-sum":
        return "token-mean", None, 1.0 / dp, None
    if loss_agg_mode == "token-mean":
        if n_tokens is None and dp > 1:
            raise ValueError("(global) batch_num_tokens is required when dp_size > 1")
        return "token-mean", None, None if n_tokens is None else float(n_tokens) / dp, None
    if n_seqs is None:
        if dp > 1:
            raise ValueError("global_batch_size is required when dp_size > 1")
        n_seqs = max(int((mask.sum(-1) > 0).sum()), 1)  # verl counts the sequences with a valid token
    seqs = float(n_seqs) / dp
    if loss_agg_mode == "seq-mean-token-mean":
        return "seq-mean-token-mean", None, None, seqs
    if loss_agg_mode == "seq-mean-token-sum":
        return "constant-normalized", 1, None, seqs
    scale = _get(info, "loss_scale_factor", None)
    return "constant-normalized", int(scale if scale is not None else mask.shape[-1]), None, seqs


def loss_config(name: str, config: Any, loss_agg_mode: str, mask: torch.Tensor) -> tuple[LossConfig, dict[str, Any]]:
    """Our `LossConfig` for loss `name` under verl's actor `config`, and the aggregation totals to pass."""
    policy = _get(config, "policy_loss", None)

    def pol(key: str) -> Any:
        return _get(policy, key, getattr(_DEFAULTS, key))

    clip = _get(config, "clip_ratio", 0.2)
    aggregation, constant, total_tokens, total_seqs = aggregation_args(
        loss_agg_mode, mask, _get(config, "global_batch_info", None)
    )
    kwargs: dict[str, Any] = {
        "name": name,
        "clip_low": float(_get(config, "clip_ratio_low", clip)),
        "clip_high": float(_get(config, "clip_ratio_high", clip)),
        "aggregation": aggregation,
        "agg_constant": constant,
        "selection_scope": "micro",
    }
    if name == "steer":
        for key in ("steer_variant", "steer_lambda_min", "steer_lambda_max", "steer_omega_floor"):
            kwargs[key] = pol(key)
        kwargs.update(dual_clip=True, dual_clip_c=float(_get(config, "clip_ratio_c", 3.0)))
    elif name == "clip_cov":
        kwargs.update(clip_cov_ratio=pol("clip_cov_ratio"), clip_cov_lb=pol("clip_cov_lb"))
        kwargs.update(clip_cov_ub=pol("clip_cov_ub"), cov_window=pol("cov_window"))
        kwargs.update(cov_percentile_low=pol("cov_percentile_low"), cov_percentile_high=pol("cov_percentile_high"))
    elif name == "kl_cov":
        kwargs.update(kl_cov_ratio=pol("kl_cov_ratio"), kl_cov_coef=pol("ppo_kl_coef"))
    cfg = LossConfig(**kwargs)
    _warn_if_not_paper(cfg)
    return cfg, {"total_tokens": total_tokens, "total_seqs": total_seqs}


# our LossConfig field → the verl override that sets it
_VERL_KEYS = {
    "clip_low": "actor_rollout_ref.actor.clip_ratio_low",
    "clip_high": "actor_rollout_ref.actor.clip_ratio_high",
    "dual_clip_c": "actor_rollout_ref.actor.clip_ratio_c",
    "clip_cov_ratio": "actor_rollout_ref.actor.policy_loss.clip_cov_ratio",
    "clip_cov_lb": "actor_rollout_ref.actor.policy_loss.clip_cov_lb",
    "clip_cov_ub": "actor_rollout_ref.actor.policy_loss.clip_cov_ub",
    "kl_cov_ratio": "actor_rollout_ref.actor.policy_loss.kl_cov_ratio",
    "kl_cov_coef": "actor_rollout_ref.actor.policy_loss.ppo_kl_coef",
}
_WARNED: set[str] = set()


def _warn_if_not_paper(cfg: LossConfig) -> None:
    """Warn once per process and setting when `cfg` is not its paper's official script (module docstring)."""
    recipe = PAPER_RECIPE_OF.get(cfg.name)
    if recipe is None:
        return
    if cfg.name == "steer" and cfg.steer_variant == "minmax":
        recipe = "steer_linear_paper"
    diff = recipe_deviations(cfg, recipe)
    if not diff:
        return
    parts = [f"{_VERL_KEYS.get(k, '+actor_rollout_ref.actor.policy_loss.' + k)}={want!r} (is {ours!r})"
             for k, (ours, want) in sorted(diff.items())]  # fmt: skip
    msg = (
        f"posttrain_probe {cfg.name} does not run the paper's script ({recipe} in posttrain_probe.rlvr.losses."
        f"RECIPES); to match it set: {', '.join(parts)}"
    )
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, stacklevel=3)


@torch.no_grad()
def entropy_metrics(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor | None,
) -> dict[str, float]:
    """dH_pred_cov, dH_pred_omega (when `entropy` is given) and dH_realized_is (module docstring)."""
    old, new = old_log_prob.detach().float(), log_prob.detach().float()
    out = {"dH_pred_cov": predicted_entropy_change(centred_cov(old, advantages, mask), mask)}
    if entropy is not None:
        out["dH_pred_omega"] = predicted_entropy_change(steer_omega(advantages, old, old, entropy, mask), mask)
    out["dH_realized_is"] = float(masked_mean(old - torch.exp(new - old) * new, mask))
    return out


def _make_loss(verl_name: str, name: str) -> Callable[..., tuple[torch.Tensor, dict[str, float]]]:
    def loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: torch.Tensor | None = None,
        rollout_entropy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if config is None:
            raise ValueError(f"loss_mode={verl_name} needs verl's actor config (clip ratios, policy_loss keys)")
        mask = response_mask.bool()
        found = (rollout_entropy, True) if rollout_entropy is not None else _TOKEN_ENTROPY.get()
        entropy, rollout_time = found if found is not None else (None, False)
        if entropy is not None:
            entropy = entropy.detach().float()
        if name == "steer" and entropy is None:
            raise ValueError(
                f"loss_mode={verl_name} needs token entropies for STEER's Omega, and none reached the loss: set "
                "actor_rollout_ref.actor.calculate_entropy=True and import posttrain_probe.integrations.verl in the "
                "workers before the actor is built (actor_rollout_ref.model.external_lib=posttrain_probe."
                "integrations.verl), or pass rollout_entropy= when calling the loss yourself"
            )
        cfg, totals = loss_config(name, config, loss_agg_mode, mask)
        selection = select_tokens(cfg, log_prob, old_log_prob, advantages, mask, entropy)
        touched = None
        if rollout_is_weights is not None:
            if name == "kl_cov":
                raise ValueError(
                    f"loss_mode={verl_name} does not take rollout correction weights (verl would weight KL-Cov's "
                    "|log rho| term too); turn off algorithm.rollout_correction or use verl's own kl_cov"
                )
            touched = float(masked_mean(((selection.pg_weight != 1) & mask).float(), mask))
            weights = selection.pg_weight * rollout_is_weights.detach().to(selection.pg_weight.dtype)
            selection = dataclasses.replace(selection, pg_weight=weights)
        loss, diag = policy_loss(
            cfg, log_prob, old_log_prob, advantages, mask, rollout_entropy=entropy, selection=selection, **totals
        )
        if touched is not None:
            diag["touched_frac"] = touched
        metrics = {"actor/pg_clipfrac": diag["clip_frac"], "actor/ppo_kl": diag["approx_kl"]}
        for key in COMMON_METRICS + LOSS_METRICS[name]:
            metrics[METRIC_PREFIX + key] = float(diag.get(key, 0.0))
        for key, value in entropy_metrics(old_log_prob, log_prob, advantages, mask, entropy).items():
            metrics[METRIC_PREFIX + key] = value
        if entropy is not None:
            metrics[METRIC_PREFIX + "H_rollout_time"] = float(rollout_time)
        return loss, metrics

    loss_fn.__name__ = f"posttrain_probe_{verl_name}"
    loss_fn.__qualname__ = loss_fn.__name__
    loss_fn.__doc__ = (
        f"verl policy loss {verl_name!r}: posttrain_probe's {name!r} (posttrain_probe.rlvr.losses) with verl's "
        "signature; see posttrain_probe.integrations.verl."
    )
    setattr(loss_fn, _OURS, name)
    return loss_fn


def register() -> list[str]:
    """Register our losses in verl's policy-loss registry (idempotent); returns the names registered. A name
    verl already uses for a loss of its own is left to verl, with a warning."""
    registry = core_algos.POLICY_LOSS_REGISTRY
    done = []
    for verl_name, name in VERL_LOSSES.items():
        existing = registry.get(verl_name)
        if existing is not None and getattr(existing, _OURS, None) is None:
            warnings.warn(
                f"verl already registers a policy loss {verl_name!r}; posttrain_probe leaves it and keeps its own "
                f"{name!r} as ptp_{name}",
                stacklevel=2,
            )
            continue
        core_algos.register_policy_loss(verl_name)(_make_loss(verl_name, name))
        done.append(verl_name)
    return done


REGISTERED = register()
install_entropy_hook()
