"""Per-step metrics that explain what an intervention did, and the single-step entropy probe.

`mechanism_metrics` (pure, from the per-micro-batch diagnostics of `losses.policy_loss`):
    cov_selected_tokens, cov_touched_tokens  Clip-Cov / KL-Cov: tokens the intervention picked over all mini-batches,
                                             and those whose gradient it changed (a Clip-Cov pick with A = 0 had none
                                             to remove; KL-Cov's |log ρ| has zero gradient where log ρ = 0)
    cov_selected_frac                        cov_selected_tokens / the tokens trained on (all mini-batches)
    cov_selected_first_mb_share              share of the picks made in the first mini-batch, which is on-policy
                                             (ρ = 1): there KL-Cov's penalty is inert
    steer_lambda_mean                        STEER: mean token weight λ over the trained tokens
    adv_mass_removed                         Clip-Cov / STEER: 1 − Σ λ|A| / Σ |A| over the trained tokens, the share of
                                             the |A|-weighted policy gradient the weights remove (negative when
                                             STEER's minmax weights above 1 add more than they remove)

`FirstMinibatchProbe` (RLVRConfig.probe_first_minibatch): the realized entropy change of ONE optimizer step on the
positions of the tokens that step trained on (the first mini-batch), measured from the full logits before and
after it, next to the exact first-order term −Cov_{a∼π}(log π(a), δz(a)) of that logit change
(`entropy.first_order_entropy_change`) and the Pearson r of each per-token predictor (first-order, −Cov_i, −Ω_i)
with it. Unlike dH_realized (all mini-batches, every token's gradient), this compares like with like.
"""

from __future__ import annotations

from typing import Any

import torch

from posttrain_probe.rlvr.entropy import entropy_from_logits, first_order_entropy_change, position_logits
from posttrain_probe.rlvr.losses import LossConfig
from posttrain_probe.utils.device import autocast_context

MECHANISM_KEYS = {
    "cov_selected_tokens, cov_touched_tokens, cov_selected_frac": "Clip-Cov/KL-Cov picks, and picks whose gradient "
    "changed, over all mini-batches",
    "cov_selected_first_mb_share": "share of the picks in the on-policy first mini-batch (KL-Cov inert there)",
    "steer_lambda_mean": "STEER: mean token weight over the trained tokens",
    "adv_mass_removed": "Clip-Cov/STEER: 1 − Σλ|A| / Σ|A| over the trained tokens",
    "dH1_realized, dH1_first_order": "probe_first_minibatch: mean single-step ΔH on the first mini-batch's positions, "
    "realized and its exact first-order term",
    "dH1_corr_first_order / cov / omega": "Pearson r of each predictor with the single-step realized ΔH per position",
}


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else float("nan")


def mechanism_metrics(
    loss: LossConfig,
    diags: list[dict[str, float]],
    pg_weight: torch.Tensor,
    adv_tok: torch.Tensor,
    mask: torch.Tensor,
) -> dict[str, float]:
    """The step's mechanism metrics (module docstring). `diags` are policy_loss's, each with the "minibatch" index
    the trainer adds; pg_weight, adv_tok, mask (B, T) over the whole rollout batch."""
    out: dict[str, float] = {}
    if loss.name in ("clip_cov", "kl_cov") and diags:
        selected = sum(d["selected_tokens"] for d in diags)
        first = min(d["minibatch"] for d in diags)
        in_first = sum(d["selected_tokens"] for d in diags if d["minibatch"] == first)
        trained = sum(d["tokens"] for d in diags)
        out["cov_selected_tokens"] = selected
        out["cov_touched_tokens"] = sum(d["selected_touched_tokens"] for d in diags)
        out["cov_selected_frac"] = selected / trained if trained else 0.0
        out["cov_selected_first_mb_share"] = in_first / selected if selected else float("nan")
    if loss.name in ("clip_cov", "steer"):
        m = mask.bool()
        w, a = pg_weight[m].double(), adv_tok[m].double().abs()
        if loss.name == "steer":
            out["steer_lambda_mean"] = float(w.mean()) if w.numel() else float("nan")
        total = float(a.sum())
        out["adv_mass_removed"] = 1.0 - float((w * a).sum()) / total if total > 0 else 0.0
    return out


def _trim(attn: torch.Tensor) -> slice:
    used = attn.any(0).nonzero().flatten()
    return slice(int(used[0]), int(used[-1]) + 1)


class FirstMinibatchProbe:
    """Full logits at the first mini-batch's target positions before the step's first optimizer update
    (`before`, called while the model is still the rollout policy) and right after it (`after_step(0)`)."""

    def __init__(self, s: Any, batch: dict[str, Any], rows: torch.Tensor) -> None:
        self.s, self.batch, self.rows = s, batch, rows
        self.before = self._logits()  # (N, V)
        self.after: torch.Tensor | None = None

    @torch.no_grad()
    def _logits(self) -> torch.Tensor:
        s, b = self.s, self.batch
        chunks = []
        for rows in torch.split(self.rows, s.cfg.micro_batch_size or len(self.rows)):
            ids, attn, target = b["ids"][rows], b["attn"][rows], b["target"][rows]
            cols = _trim(attn)
            with autocast_context(s.device, s.autocast):
                chunks.append(position_logits(s.model, ids[:, cols], attn[:, cols], target[:, cols]))
        return torch.cat(chunks)

    def after_step(self, minibatch: int) -> None:
        if minibatch == 0 and self.after is None:
            self.after = self._logits()

    def result(
        self, mask: torch.Tensor, cov: torch.Tensor, omega: torch.Tensor
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Metrics and (B, S) tensors for the token dump; mask (B, S) = the trained tokens, cov/omega (B, S)."""
        target = self.batch["target"]
        first = torch.zeros_like(target)
        first[self.rows] = target[self.rows]
        realized = torch.zeros(target.shape, dtype=torch.float32, device=target.device)
        first_order = torch.zeros_like(realized)
        if self.after is not None:
            t = self.s.cfg.temperature
            h0 = entropy_from_logits(self.before.double(), t)  # float64: ΔH ~ 1e-4 of H ~ 1
            h1 = entropy_from_logits(self.after.double(), t)
            # (N,) in row-major order of target[rows]; scatter back in the same order
            sub = target[self.rows]
            r_sub = torch.zeros(sub.shape, dtype=torch.float32, device=target.device)
            f_sub = torch.zeros_like(r_sub)
            r_sub[sub] = (h1 - h0).float()
            f_sub[sub] = first_order_entropy_change(self.before, self.after, t).float()
            realized[self.rows], first_order[self.rows] = r_sub, f_sub
        used = first & mask.bool()
        n = int(used.sum())
        y = realized[used]
        metrics = {
            "dH1_tokens": n,
            "dH1_realized": float(y.mean()) if n else 0.0,
            "dH1_first_order": float(first_order[used].mean()) if n else 0.0,
            "dH1_corr_first_order": _pearson(first_order[used], y) if n > 1 else float("nan"),
            "dH1_corr_cov": _pearson(-cov[used], y) if n > 1 else float("nan"),
            "dH1_corr_omega": _pearson(-omega[used], y) if n > 1 else float("nan"),
        }
        dump = {"first_minibatch": used, "dH1_realized": realized, "dH1_first_order": first_order}
        return metrics, dump
