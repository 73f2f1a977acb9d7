"""Token-level policy losses of the GRPO family, KL to a reference, and loss aggregation. All pure.

Every tensor is (B, T) over response tokens with a bool `mask` of valid tokens; ρ = exp(log π − log π_old).

    grpo           −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A)            ε_low = ε_high = 0.2
    clip_higher    the same with ε_high = 0.28 (DAPO)
    dual_clip      grpo, and for A < 0 at most −c·A (c = 3, Ye et al. 2020 / verl); `dual_clip=True` adds the same
                   cap to any clipped loss (grpo, clip_higher, steer, clip_cov), as STEER's official loss does
    entropy_bonus  grpo − β·H_token                                   β = `entropy_coef`
    clip_cov       grpo with the gradient of a few high-Cov tokens removed (Cui et al. 2025): among valid,
                   not-already-clipped tokens with lb < Cov_i < ub (or, with cov_window="percentile", Cov_i > 0
                   and between two percentiles), pick max(1, ⌊r·N⌋) at random and multiply their loss by 0
    kl_cov         −ρA on every token (no clipping) + β·|log ρ| on the top max(1, ⌊k·N⌋) tokens by Cov_i.
                   |log ρ| has zero gradient at ρ = 1, so on the on-policy first mini-batch it is inert
    steer          grpo × λ_i, λ_i = exp(−κ|Ω_i|), κ = −ln λ_min / max(max|Ω|, floor), clamped to
                   [λ_min, 1] ("exp"), or λ_max − (λ_max−λ_min)|Ω_i| / max(max|Ω|, floor) ("linear"), or the
                   official linear mapping, min–max over the scope: λ_max − (λ_max−λ_min)(|Ω_i| − min|Ω|) /
                   (max|Ω| − min|Ω|) ("minmax"; (λ_min+λ_max)/2 when all |Ω| are equal; λ_max may exceed 1);
                   λ is a constant (no gradient). Ω as in `entropy.steer_omega` (Hao et al. 2025)

Cov_i = (log π_i − mean log π)(A_i − mean A) over the valid tokens of the selection scope, with the
current (detached) log π, as verl computes it. The scope is the tensors passed to `select_tokens`: a
micro-batch (the reference code) or the whole mini-batch (`selection_scope`, handled by the trainer).

Ratios: the paper presets (Clip-Cov r = 2e-4 with window (1, 5); KL-Cov k = 2e-3) select a single token
at toy batch sizes (a few thousand tokens), so the "toy" presets use r = 0.02 from the top-10% Cov
percentile window and k = 0.05 (the settings of the tiny run in ../shared/NOTES.md). The Clip-Cov
reference runs also used ε = 1 (set clip_low = clip_high = 1 to match); `cov_preset` leaves ε alone, the
`RECIPES` below set it. A value filled in from a preset or default is re-derived when
`dataclasses.replace` changes what it derives from (`cov_preset`, `name`, `clip_low`); a value the caller
gave explicitly is kept.

Recipes (`LossConfig.from_recipe(name, **overrides)`, or `loss: {recipe: NAME}` in YAML): the papers' own
loss settings, exactly as their official launch scripts set them (sources and line numbers in `RECIPES`;
tests/test_rlvr_presets.py checks every number against constants cited from those scripts). Only the loss
is set: the scripts' learning rate (1e-6), batch sizes and mini-batch counts are for 7B models and are
listed in `RECIPE_CONTEXT`, not applied.

KL to a reference (off by default, kl_coef = 0): k1 = log π − log π_ref; k3 = exp(log π_ref − log π) −
(log π_ref − log π) − 1 (Schulman's unbiased, non-negative estimator), added as kl_coef·k per token.

Aggregations ("token-mean" is the default):
    token-mean              Σ_bt ℓ·m / Σ_bt m
    seq-mean-token-mean     mean_b (Σ_t ℓ·m / Σ_t m)
    constant-normalized     Σ_bt ℓ·m / (B · C), C a constant (the max response length; Dr. GRPO)
`aggregate` takes the totals of the whole mini-batch so micro-batch losses add up to the mini-batch loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from posttrain_probe.rlvr.entropy import centred_cov, masked_mean, steer_omega

LOSS_TYPES = ("grpo", "clip_higher", "dual_clip", "entropy_bonus", "clip_cov", "kl_cov", "steer")
AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "constant-normalized")
STEER_VARIANTS = ("exp", "linear", "minmax")
COV_PRESETS = {
    "paper": {"clip_cov_ratio": 2e-4, "cov_window": "absolute", "kl_cov_ratio": 2e-3},
    "toy": {"clip_cov_ratio": 0.02, "cov_window": "percentile", "kl_cov_ratio": 0.05},
}

# The papers' loss settings as their official scripts set them.
#   Cui et al. 2025, github.com/PRIME-RL/Entropy-Mechanism-of-RL (commit 6071b11; the scripts read from the mirror
#   LiyuanLucasLiu/Entropy-Mechanism-of-RL @ 6e45694, identical to verl's recipe/entropy port):
#     recipe/dapo/7b_clip_cov.sh l.17-21  clip_ratio_low=1 clip_ratio_high=1 clip_cov_ratio=0.0002 clip_cov_lb=1.0
#                                         clip_cov_ub=5.0 (their compute_policy_loss_clip_cov has no dual-clip,
#                                         so the script's clip_ratio_c=10.0 does nothing there)
#     recipe/dapo/7b_kl_cov.sh   l.53-54  ppo_kl_coef=1 k_percent=0.2, a PERCENT: compute_policy_loss_kl_cov takes
#                                         max(1, int(N * k_percent / 100)) tokens, so k = 0.002 (verl's port:
#                                         kl_cov_ratio=0.002); KL-Cov does not clip (clip_ratio 0.2 unused)
#   Hao et al. 2025 (STEER), github.com/zz-haooo/STEER @ b31df71:
#     run/run_exp.sh    l.57-63  clip_ratio_high=0.28 clip_ratio_low=0.2 clip_ratio_c=10.0 loss_mode=entropy_control
#                                token_weight_min=0.8 token_weight_max=1.0 linear=False
#     run/run_linear.sh l.57-63  the same with token_weight_max=1.2 linear=True
#     verl/trainer/ppo/core_algos.py compute_token_weights: exp mapping k = -ln(w_min) / max(max|Ω|, 0.02), weights
#                                clamped to [w_min, 1]; linear = min–max of |Ω| onto [w_max, w_min]; and
#                                compute_policy_loss_with_entropy applies dual-clip (c = clip_ratio_c) before the
#                                weights. Its matched baseline is verl's vanilla loss with the same clip settings.
RECIPES: dict[str, dict[str, Any]] = {
    "steer_paper": {
        "name": "steer", "steer_variant": "exp", "steer_lambda_min": 0.8, "steer_lambda_max": 1.0,
        "steer_omega_floor": 0.02, "clip_low": 0.2, "clip_high": 0.28, "dual_clip": True, "dual_clip_c": 10.0,
    },
    "steer_linear_paper": {
        "name": "steer", "steer_variant": "minmax", "steer_lambda_min": 0.8, "steer_lambda_max": 1.2,
        "clip_low": 0.2, "clip_high": 0.28, "dual_clip": True, "dual_clip_c": 10.0,
    },
    "steer_baseline_paper": {
        "name": "clip_higher", "clip_low": 0.2, "clip_high": 0.28, "dual_clip": True, "dual_clip_c": 10.0,
    },
    "clip_cov_paper": {
        "name": "clip_cov", "cov_preset": "paper", "clip_cov_ratio": 2e-4, "cov_window": "absolute",
        "clip_cov_lb": 1.0, "clip_cov_ub": 5.0, "clip_low": 1.0, "clip_high": 1.0,
    },
    "kl_cov_paper": {"name": "kl_cov", "cov_preset": "paper", "kl_cov_ratio": 2e-3, "kl_cov_coef": 1.0},
    # scale-adapted: the paper ratios select max(1, ⌊r·N⌋) = 1 token per selection scope at toy sizes (a micro-batch
    # of a few hundred tokens); these select ⌊0.02·N⌋ / ⌊0.05·N⌋ per scope by construction (Clip-Cov fewer when
    # its window has fewer candidates). The realized fraction is logged per step as cov_selected_frac; it has not
    # yet been measured on the default toy pair
    "clip_cov_toy": {"name": "clip_cov", "cov_preset": "toy"},
    "kl_cov_toy": {"name": "kl_cov", "cov_preset": "toy"},
}  # fmt: skip
RECIPE_CONTEXT: dict[str, str] = {
    "steer_paper": "STEER run_exp.sh: Qwen2.5-Math-7B, lr 1e-6, 512 prompts x 8, mini-batch 32 prompts (16 per step)",
    "steer_linear_paper": "STEER run_linear.sh: as steer_paper",
    "steer_baseline_paper": "the vanilla (clip-higher + dual-clip) loss under steer_paper's clip settings",
    "clip_cov_paper": "Cui 7b_clip_cov.sh: lr 1e-6, 256 prompts x 8, mini-batch 32 prompts (8 per step), dynamic "
    "sampling on; selects 0.02% of the tokens (at toy sizes max(1, .) makes that 1 token per scope)",
    "kl_cov_paper": "Cui 7b_kl_cov.sh: lr 1e-6, 256 prompts x 8, mini-batch 256 prompts (ONE per step, so rho = 1 "
    "and |log rho| only sees numerical noise; verl's port uses 32); selects 0.2% (1 token per toy scope)",
    "clip_cov_toy": "selects 2% of the tokens per scope, drawn from the top-10% Cov percentile window",
    "kl_cov_toy": "penalizes the top 5% of the tokens per scope by Cov",
}


@dataclass(frozen=True)
class LossConfig:
    """Which token loss and its hyper-parameters; `None` fields take their loss's or preset's default."""

    name: str = "grpo"
    clip_low: float = 0.2
    clip_high: float | None = None  # 0.28 for clip_higher, else clip_low
    dual_clip_c: float = 3.0
    dual_clip: bool = False  # cap A < 0 tokens at −c·A on top of this loss (implied by name="dual_clip")
    entropy_coef: float = 0.001
    cov_preset: str = "toy"
    clip_cov_ratio: float | None = None
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    cov_window: str | None = None  # "absolute" (lb, ub) or "percentile"
    cov_percentile_low: float = 90.0
    cov_percentile_high: float = 100.0
    kl_cov_ratio: float | None = None
    kl_cov_coef: float = 1.0
    steer_variant: str = "exp"
    steer_lambda_min: float = 0.8
    steer_lambda_max: float = 1.0
    steer_omega_floor: float = 0.02
    selection_scope: str = "micro"
    aggregation: str = "token-mean"
    agg_constant: int | None = None
    kl_estimator: str = "k3"
    kl_coef: float = 0.0
    recipe: str | None = None  # the RECIPES entry this config came from (a label; from_recipe sets the values)
    # values __post_init__ filled in for None fields, so that dataclasses.replace re-derives them (not serialised)
    _filled: tuple[tuple[str, Any], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if self.name not in LOSS_TYPES:
            bad(f"loss name={self.name!r} is unknown; choose one of {', '.join(LOSS_TYPES)}")
        if self.aggregation not in AGGREGATIONS:
            bad(f"aggregation={self.aggregation!r} is unknown; choose one of {', '.join(AGGREGATIONS)}")
        if self.cov_preset not in COV_PRESETS:
            bad(f"cov_preset={self.cov_preset!r} is unknown; choose one of {', '.join(COV_PRESETS)}")
        if self.recipe is not None and self.recipe not in RECIPES:
            bad(f"recipe={self.recipe!r} is unknown; choose one of {', '.join(RECIPES)}")
        # a value equal to the one an earlier instance filled in was not given by the caller (dataclasses.replace
        # copies every field): derive it again from this instance's preset / name / clip_low
        for key, value in self._filled:
            if getattr(self, key) == value:
                object.__setattr__(self, key, None)
        filled: list[tuple[str, Any]] = []
        preset = COV_PRESETS[self.cov_preset]
        for key in ("clip_cov_ratio", "cov_window", "kl_cov_ratio"):
            if getattr(self, key) is None:
                object.__setattr__(self, key, preset[key])
                filled.append((key, preset[key]))
        if self.clip_high is None:
            object.__setattr__(self, "clip_high", 0.28 if self.name == "clip_higher" else self.clip_low)
            filled.append(("clip_high", self.clip_high))
        object.__setattr__(self, "_filled", tuple(filled))
        if not (self.clip_low > 0 and self.clip_high > 0):
            bad(f"clip_low={self.clip_low} and clip_high={self.clip_high} must be > 0 (e.g. 0.2)")
        if self.dual_clip_c <= 1:
            bad(f"dual_clip_c={self.dual_clip_c} must be > 1 (verl uses 3, the STEER scripts 10)")
        if self.dual_clip and self.name == "kl_cov":
            bad("dual_clip=True does not apply to kl_cov (it does not clip); set dual_clip: false")
        if self.entropy_coef < 0 or self.kl_coef < 0 or self.kl_cov_coef < 0:
            bad("entropy_coef, kl_coef and kl_cov_coef must be >= 0")
        for name in ("clip_cov_ratio", "kl_cov_ratio"):
            if not 0 < getattr(self, name) <= 1:
                bad(f"{name}={getattr(self, name)} must be in (0, 1] (a fraction of the tokens)")
        if self.cov_window not in ("absolute", "percentile"):
            bad(f"cov_window={self.cov_window!r}; choose 'absolute' (clip_cov_lb/ub) or 'percentile'")
        if self.clip_cov_lb >= self.clip_cov_ub:
            bad(f"clip_cov_lb={self.clip_cov_lb} must be < clip_cov_ub={self.clip_cov_ub}")
        if not 0 <= self.cov_percentile_low < self.cov_percentile_high <= 100:
            bad("need 0 <= cov_percentile_low < cov_percentile_high <= 100 (e.g. 90 and 100)")
        if self.steer_variant not in STEER_VARIANTS:
            bad(f"steer_variant={self.steer_variant!r}; choose one of {', '.join(STEER_VARIANTS)}")
        top = math.inf if self.steer_variant == "minmax" else 1.0
        if not 0 < self.steer_lambda_min <= self.steer_lambda_max <= top:
            bad(
                "need 0 < steer_lambda_min <= steer_lambda_max <= 1 (defaults 0.8 and 1.0; only "
                "steer_variant='minmax' allows steer_lambda_max > 1, e.g. the official 1.2)"
            )
        if self.steer_omega_floor <= 0:
            bad(f"steer_omega_floor={self.steer_omega_floor} must be > 0 (default 0.02)")
        if self.selection_scope not in ("micro", "mini"):
            bad(f"selection_scope={self.selection_scope!r}; choose 'micro' (reference code) or 'mini'")
        if self.kl_estimator not in ("k1", "k3"):
            bad(f"kl_estimator={self.kl_estimator!r}; choose 'k1' or 'k3'")
        if self.agg_constant is not None and self.agg_constant < 1:
            bad(f"agg_constant={self.agg_constant} must be a positive token count")

    @property
    def needs_selection(self) -> bool:
        """Whether the loss selects or reweights tokens from batch statistics (scope matters)."""
        return self.name in ("clip_cov", "kl_cov", "steer")

    @property
    def applies_dual_clip(self) -> bool:
        return self.name == "dual_clip" or self.dual_clip

    @classmethod
    def from_recipe(cls, recipe: str, **overrides: Any) -> LossConfig:
        """The loss of a named recipe (`RECIPES`), with `overrides` on top; `recipe` records the name."""
        if recipe not in RECIPES:
            raise ValueError(f"recipe={recipe!r} is unknown; choose one of {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **overrides, "recipe": recipe})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_filled")
        return d


def recipe_deviations(cfg: LossConfig, recipe: str) -> dict[str, tuple[Any, Any]]:
    """The loss settings of `cfg` that differ from `recipe`'s: {field: (ours, the recipe's)} (empty = the recipe).
    Used by the verl integration to warn when a run does not follow the paper's script."""
    want = RECIPES[recipe]
    return {
        key: (getattr(cfg, key), value)
        for key, value in want.items()
        if key not in ("name", "cov_preset") and getattr(cfg, key) != value
    }


PAPER_RECIPE_OF = {"steer": "steer_paper", "clip_cov": "clip_cov_paper", "kl_cov": "kl_cov_paper"}


# ------------------------------------------------------------------------------------------ selection


@dataclass
class Selection:
    """Per-token constants chosen from batch statistics: `pg_weight` multiplies the policy-gradient loss
    (0 for Clip-Cov's detached tokens, λ for STEER, 1 otherwise); `kl_mask` marks KL-Cov's tokens."""

    pg_weight: torch.Tensor  # (B, T) float, no grad
    kl_mask: torch.Tensor  # (B, T) bool
    cov: torch.Tensor  # (B, T) the centred covariance of the scope
    omega: torch.Tensor | None = None  # (B, T) STEER's Ω (steer only)
    stats: dict[str, float] = field(default_factory=dict)

    def slice(self, rows: slice | torch.Tensor) -> Selection:
        """The selection restricted to some rows (a micro-batch of a mini-batch-scope selection)."""
        return Selection(
            self.pg_weight[rows],
            self.kl_mask[rows],
            self.cov[rows],
            None if self.omega is None else self.omega[rows],
            dict(self.stats),
        )


def pg_clip_terms(
    ratio: torch.Tensor, adv: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two PPO terms: −ρA and −clip(ρ, 1−ε_low, 1+ε_high)A."""
    return -adv * ratio, -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)


def _percentile_window(cov: torch.Tensor, mask: torch.Tensor, low: float, high: float) -> tuple[float, float]:
    values = cov[mask].double()
    q = torch.quantile(values, torch.tensor([low / 100, high / 100], dtype=torch.float64, device=values.device))
    return float(q[0]), float(q[1])


def select_tokens(
    cfg: LossConfig,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    rollout_entropy: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Selection:
    """The tokens (or weights) a Cov-based intervention picks within this scope.

    `logp` is the current log π (detached here), `old_logp` the rollout policy's. Clip-Cov draws its
    random subset with `generator` (seeded by the trainer for reproducibility).
    """
    logp = logp.detach().float()
    mask = mask.bool()
    n_valid = int(mask.sum())
    cov = centred_cov(logp, adv, mask)
    pg_weight = torch.ones_like(logp)
    kl_mask = torch.zeros_like(mask)
    omega = None
    stats: dict[str, float] = {"scope_tokens": float(n_valid)}
    if n_valid == 0:
        return Selection(pg_weight, kl_mask, cov, omega, stats)
    if cfg.name == "clip_cov":
        ratio = torch.exp(logp - old_logp.float())
        pg1, pg2 = pg_clip_terms(ratio, adv.float(), cfg.clip_low, cfg.clip_high)
        clipped = (pg2 > pg1) & mask
        if cfg.cov_window == "absolute":
            lb, ub = cfg.clip_cov_lb, cfg.clip_cov_ub
            window = (cov > lb) & (cov < ub)
        else:
            lb, ub = _percentile_window(cov, mask, cfg.cov_percentile_low, cfg.cov_percentile_high)
            window = (cov >= lb) & (cov <= ub) & (cov > 0)
        candidates = torch.nonzero(window & mask & ~clipped)  # (K, 2)
        n_pick = min(max(1, math.floor(cfg.clip_cov_ratio * n_valid)), len(candidates))
        if n_pick:
            perm = torch.randperm(len(candidates), generator=generator)[:n_pick]
            picked = candidates[perm]
            pg_weight[picked[:, 0], picked[:, 1]] = 0.0
        stats.update(cov_window_low=lb, cov_window_high=ub, candidates=float(len(candidates)))
    elif cfg.name == "kl_cov":
        n_pick = max(1, math.floor(cfg.kl_cov_ratio * n_valid))
        flat = cov.masked_fill(~mask, -math.inf).reshape(-1)
        top = torch.topk(flat, n_pick).indices
        kl_mask.view(-1)[top] = True
    elif cfg.name == "steer":
        if rollout_entropy is None:
            raise ValueError("loss 'steer' needs rollout_entropy (the token entropies at sampling time)")
        omega = steer_omega(adv, logp, old_logp, rollout_entropy, mask)
        abs_omega = omega.abs()
        scale = max(float(abs_omega[mask].max()), cfg.steer_omega_floor)
        if cfg.steer_variant == "exp":
            kappa = -math.log(cfg.steer_lambda_min) / scale
            lam = torch.exp(-kappa * abs_omega).clamp(cfg.steer_lambda_min, 1.0)
        elif cfg.steer_variant == "minmax":  # the official linear=True mapping (compute_token_weights)
            lo, hi = float(abs_omega[mask].min()), float(abs_omega[mask].max())
            lam_lo, lam_hi = cfg.steer_lambda_min, cfg.steer_lambda_max
            if hi > lo:
                lam = lam_hi - (abs_omega - lo) * ((lam_hi - lam_lo) / (hi - lo))
            else:
                lam = torch.full_like(abs_omega, (lam_lo + lam_hi) / 2)
            lam = lam.clamp(lam_lo, lam_hi)
        else:
            span = cfg.steer_lambda_max - cfg.steer_lambda_min
            lam = (cfg.steer_lambda_max - span * abs_omega / scale).clamp(cfg.steer_lambda_min, cfg.steer_lambda_max)
        pg_weight = torch.where(mask, lam, pg_weight)
        stats.update(omega_abs_max=float(abs_omega[mask].max()), steer_lambda_mean=float(lam[mask].mean()))
    return Selection(pg_weight, kl_mask, cov, omega, stats)


# ------------------------------------------------------------------------------------------ aggregation


def aggregate(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    constant: int | None = None,
    total_tokens: float | None = None,
    total_seqs: float | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar (see the module docstring).

    `total_tokens` / `total_seqs` are the mini-batch's counts when this is one micro-batch of it, so that
    the micro-batch losses sum to the mini-batch loss; by default they are this batch's own counts.
    """
    m = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        denom = total_tokens if total_tokens is not None else m.sum().clamp(min=1)
        return (loss_mat * m).sum() / denom
    n_seqs = total_seqs if total_seqs is not None else loss_mat.shape[0]
    if mode == "seq-mean-token-mean":
        per_seq = (loss_mat * m).sum(-1) / m.sum(-1).clamp(min=1)
        return per_seq.sum() / n_seqs
    if mode == "constant-normalized":
        if constant is None:
            raise ValueError("aggregation 'constant-normalized' needs a constant (e.g. max_new_tokens)")
        return (loss_mat * m).sum() / (n_seqs * constant)
    raise ValueError(f"aggregation={mode!r} is unknown; choose one of {', '.join(AGGREGATIONS)}")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimate from sampled-token log-probs: "k1" or "k3"."""
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k3":
        d = ref_logp - logp
        return torch.exp(d) - d - 1
    raise ValueError(f"estimator={estimator!r}; choose 'k1' or 'k3'")


# -------------------------------------------------------------------------------------------- the loss


def policy_loss(
    cfg: LossConfig,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor | None = None,
    rollout_entropy: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    selection: Selection | None = None,
    generator: torch.Generator | None = None,
    total_tokens: float | None = None,
    total_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar loss of `cfg.name` and a dict of diagnostics.

    logp (B, T) carries the gradient; old_logp, adv (per token), mask, rollout_entropy, ref_logp are
    constants; `entropy` (with gradient) is needed by entropy_bonus. Without `selection`, Cov-based
    selections are made over these tensors (micro-batch scope).
    """
    mask = mask.bool()
    adv = adv.float()
    if cfg.name == "entropy_bonus" and entropy is None:
        raise ValueError("loss 'entropy_bonus' needs the token entropies (with gradient)")
    if cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (the reference model's token log-probs)")
    if selection is None:
        selection = select_tokens(cfg, logp, old_logp, adv, mask, rollout_entropy, generator)
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    pg1, pg2 = pg_clip_terms(ratio, adv, cfg.clip_low, cfg.clip_high)
    clipped = pg2 > pg1
    if cfg.name == "kl_cov":
        per_token = pg1 + cfg.kl_cov_coef * log_ratio.abs() * selection.kl_mask
    else:
        per_token = torch.maximum(pg1, pg2)
        if cfg.applies_dual_clip:
            dual = torch.minimum(per_token, -cfg.dual_clip_c * adv)
            dual_active = (adv < 0) & (dual < per_token)
            per_token = torch.where(adv < 0, dual, per_token)
        per_token = per_token * selection.pg_weight
        if cfg.name == "entropy_bonus":
            per_token = per_token - cfg.entropy_coef * entropy
    kl = None
    if cfg.kl_coef > 0:
        kl = kl_penalty(logp, ref_logp, cfg.kl_estimator)
        per_token = per_token + cfg.kl_coef * kl
    loss = aggregate(per_token, mask, cfg.aggregation, cfg.agg_constant, total_tokens, total_seqs)

    with torch.no_grad():
        valid = mask.float()
        cov = selection.cov
        cov_valid = cov[mask]
        if cfg.name == "clip_cov":
            touched = (selection.pg_weight == 0) & mask
        elif cfg.name == "kl_cov":
            touched = selection.kl_mask & mask
        elif cfg.name == "steer":
            touched = (selection.pg_weight != 1) & mask
        elif cfg.name == "entropy_bonus":
            touched = mask
        elif cfg.name == "dual_clip":
            touched = dual_active & mask
        else:
            touched = torch.zeros_like(mask)
        applies_clip = cfg.name != "kl_cov"
        diag = {
            "loss": float(loss.detach()),
            "tokens": float(valid.sum()),
            "clip_frac": float(masked_mean(clipped.float(), mask)) if applies_clip else 0.0,
            "clip_low_frac": float(masked_mean((clipped & (adv < 0)).float(), mask)) if applies_clip else 0.0,
            "clip_high_frac": float(masked_mean((clipped & (adv > 0)).float(), mask)) if applies_clip else 0.0,
            "touched_frac": float(masked_mean(touched.float(), mask)),
            "abs_log_ratio": float(masked_mean(log_ratio.detach().abs(), mask)),
            "approx_kl": float(masked_mean(-log_ratio.detach(), mask)),
            "cov_mean": float(cov_valid.mean()) if cov_valid.numel() else 0.0,
            "cov_pos_frac": float((cov_valid > 0).float().mean()) if cov_valid.numel() else 0.0,
            "cov_pos_mean": float(cov_valid[cov_valid > 0].mean()) if (cov_valid > 0).any() else 0.0,
            "cov_neg_mean": float(cov_valid[cov_valid < 0].mean()) if (cov_valid < 0).any() else 0.0,
        }
        if kl is not None:
            diag["kl_ref"] = float(masked_mean(kl.detach(), mask))
        if cfg.applies_dual_clip:
            diag["dual_clip_frac"] = float(masked_mean(dual_active.float(), mask))
        if cfg.name in ("clip_cov", "kl_cov"):
            # selected: the tokens the intervention picked; touched: those whose gradient it changed (a Clip-Cov
            # pick with A = 0 had none to remove; KL-Cov's |log ρ| has zero gradient where log ρ = 0)
            selected = touched
            moved = adv != 0 if cfg.name == "clip_cov" else log_ratio.detach() != 0
            diag["selected_tokens"] = float(selected.sum())
            diag["selected_touched_tokens"] = float((selected & moved).sum())
        diag.update(selection.stats)
    return loss, diag
