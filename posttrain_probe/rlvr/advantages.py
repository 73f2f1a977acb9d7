"""Group-relative advantages (GRPO) and the dynamic-sampling filter.

Rewards come as a flat vector of P·G values, prompt-major (the G samples of prompt 0, then prompt 1, ...).

    A_i = (r_i − mean_group r) / (std_group r + ε)      scale="std"   (GRPO)
    A_i =  r_i − mean_group r                           scale="none"  (Dr. GRPO: no std division)

ε = 1e-6 (`ADV_EPS`) keeps groups whose rewards are all equal finite: their advantages are exactly 0.
The group std is the unbiased (Bessel-corrected) one by default, as in TRL's GRPOTrainer and verl's
GRPO estimator; `unbiased=False` gives the population std.
"""

from __future__ import annotations

from typing import Literal

import torch

ADV_EPS = 1e-6
AdvScale = Literal["std", "none"]


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be a flat (P*G,) vector, got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of {group_size}; "
            "pass prompt-major rewards with G samples per prompt"
        )
    return rewards.reshape(-1, group_size)  # (P, G)


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: AdvScale = "std",
    eps: float = ADV_EPS,
    unbiased: bool = True,
) -> torch.Tensor:
    """Per-sample advantages (P*G,) from prompt-major rewards (P*G,), normalized within each group."""
    if scale not in ("std", "none"):
        raise ValueError(f"scale={scale!r}; choose 'std' (GRPO) or 'none' (mean-centred only)")
    g = _grouped(rewards.to(torch.float64), group_size)
    centred = g - g.mean(dim=1, keepdim=True)
    if scale == "std":
        if group_size == 1:
            raise ValueError("scale='std' needs group_size >= 2 (the std of one sample is undefined)")
        centred = centred / (g.std(dim=1, unbiased=unbiased, keepdim=True) + eps)
    return centred.reshape(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def nonzero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Bool mask (P,) of groups whose rewards are not all equal (DAPO's dynamic-sampling filter)."""
    g = _grouped(rewards, group_size)
    return (g != g[:, :1]).any(dim=1)


def expand_group_mask(group_mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """A per-group mask (P,) repeated to per-sample (P*G,)."""
    return group_mask.repeat_interleave(group_size)
