"""Weight screens for entropy (confidence-regulation) neurons: pure functions over weight matrices.

A neuron i of an MLP layer writes w_out,i (a row of the down-projection) into the residual stream. What the
unembedding sees of that direction is what the final norm passes on: x ↦ γ ⊙ P x / s(x) (P = centering for
LayerNorm, identity for RMSNorm; γ the norm's elementwise weight, (1 + w) in Gemma). The screens therefore
use, by default, the *effective* unembedding W_eff = N · W_U (N = the norm's linear part, read off the real
module, not re-implemented) with each row centred over the vocabulary (a logit shift shared by every token
does not change the softmax) — the analogue of TransformerLens's fold_ln + center_unembed, which Stolfo et al.
used. For sandwich-norm blocks (Gemma-2/3) the MLP output passes through a post-feedforward norm before the
residual; its linear part is folded into w_out the same way.

Screens (SPEC §3): ‖w_out,i‖; LogitVar_i = Var_v cos(w_out,i, W_eff[:, v]) (population variance over the
vocabulary); ρ_i = ‖U_nullᵀ w_out,i‖ / ‖w_out,i‖ with U_null the k residual-space singular directions of W_eff
with the smallest singular values.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from posttrain_probe.pair.arch import ArchInfo


class NormFoldError(ValueError):
    """A norm module whose linear part could not be read off reliably."""


def _norm_eps(norm: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        v = getattr(norm, name, None)
        if isinstance(v, int | float):
            return float(v)
    return 1e-6


def _norm_divisor(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The norm's divisor s(x) for rows of x (N, D) -> (N,): LayerNorm: sqrt(var+eps); else RMS."""
    eps = _norm_eps(norm)
    if isinstance(norm, nn.LayerNorm):
        return (x.var(-1, unbiased=False) + eps).sqrt()
    return (x.pow(2).mean(-1) + eps).sqrt()


@torch.no_grad()
def norm_linear_map(norm: nn.Module, d_model: int, check: bool = True) -> torch.Tensor:
    """(D, D) matrix N whose row d is the norm's linear part applied to e_d, so that for any x (rows)
    norm(x) = bias + (x @ N) / s(x). Read off the real module (a float32 CPU copy); `check` verifies the
    identity on random inputs and raises `NormFoldError` when it does not hold."""
    m = copy.deepcopy(norm).float().cpu()
    eye = torch.eye(d_model)
    bias = m(torch.zeros(1, d_model))[0]  # LayerNorm: β; RMSNorm: 0
    n_map = (m(eye) - bias) * _norm_divisor(m, eye)[:, None]  # (D, D)
    if check:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, d_model, generator=g) * 3 + torch.randn(1, d_model, generator=g)
        want = m(x)
        got = bias + (x @ n_map) / _norm_divisor(m, x)[:, None]
        err = (want - got).abs().max().item() / max(want.abs().max().item(), 1e-12)
        if not err < 1e-4:
            raise NormFoldError(
                f"{type(norm).__name__} is not an elementwise-affine LayerNorm/RMSNorm (relative error "
                f"{err:.1e} when folding it); run the screen with fold_final_norm=False"
            )
    return n_map


def effective_unembed(arch: ArchInfo, fold_final_norm: bool = True, center: bool = True) -> torch.Tensor:
    """W_eff (D, V) float32 on CPU: W_U with the final norm's linear part folded in and each row centred over
    the vocabulary (see the module docstring)."""
    w_u = arch.unembed_weights().float().cpu()  # (D, V)
    if fold_final_norm:
        w_u = norm_linear_map(arch.modules["final_norm"], arch.d_model) @ w_u
    if center:
        w_u = w_u - w_u.mean(dim=1, keepdim=True)
    return w_u


def neuron_directions(arch: ArchInfo, layer: int, fold_post_norm: bool = True) -> torch.Tensor:
    """(M, D) float32 CPU: each neuron's residual-stream write direction. For sandwich-norm blocks the
    post-feedforward norm's linear part is folded in (its divisor depends on the whole MLP output)."""
    w = arch.neuron_out_weights(layer).float().cpu()
    if fold_post_norm and arch.mlp_out_name != "mlp":
        w = w @ norm_linear_map(arch.modules["mlp_outs"][layer], arch.d_model)
    return w


def resolve_null_k(null_k: int | float | None, d_model: int) -> int:
    """k for the null space: an int as given, a float in (0, 1) as a fraction of d_model, None → 40 when
    d_model ≥ 400 (the reference default) else ceil(0.1·d_model)."""
    if null_k is None:
        k = 40 if d_model >= 400 else math.ceil(0.1 * d_model)
    elif isinstance(null_k, float) and not float(null_k).is_integer():
        if not 0 < null_k < 1:
            raise ValueError(f"null_k={null_k}: a float must be a fraction of d_model in (0, 1)")
        k = max(1, math.ceil(null_k * d_model))
    else:
        k = int(null_k)
    if not 1 <= k < d_model:
        raise ValueError(
            f"null_k={null_k} gives k={k}, but it must be in 1..{d_model - 1} for d_model={d_model}; "
            "pass a smaller int or a fraction such as 0.1"
        )
    return k


def unembed_spectrum(w_eff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values (D,) of W_eff (D, V), ascending, and the matching residual-space singular directions
    as columns (D, D), from the eigendecomposition of W_eff W_effᵀ in float64 (works for D > V too)."""
    w = w_eff.double()
    evals, evecs = torch.linalg.eigh(w @ w.T)
    return evals.clamp_min(0).sqrt(), evecs


def logit_var(w_out: torch.Tensor, w_eff: torch.Tensor) -> torch.Tensor:
    """LogitVar (M,): variance over the vocabulary of cos(w_out,i, W_eff[:, v])."""
    wn = w_out.double() / w_out.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    un = w_eff.double() / w_eff.double().norm(dim=0, keepdim=True).clamp_min(1e-30)
    return (wn @ un).var(dim=1, unbiased=False)  # (M, V) -> (M,)


def null_fraction(w_out: torch.Tensor, u_null: torch.Tensor) -> torch.Tensor:
    """ρ (M,) = ‖U_nullᵀ w_i‖ / ‖w_i‖ for orthonormal columns U_null (D, k)."""
    w = w_out.double()
    return (w @ u_null.double()).norm(dim=1) / w.norm(dim=1).clamp_min(1e-30)


def norm_deciles(norms: np.ndarray) -> np.ndarray:
    """Decile 0..9 of each value by rank (ties broken by index), so every decile has ⌊M/10⌋ or ⌈M/10⌉."""
    order = np.argsort(norms, kind="stable")
    ranks = np.empty(len(norms), dtype=np.int64)
    ranks[order] = np.arange(len(norms))
    return (ranks * 10) // len(norms)


def screen_weights(w_out: torch.Tensor, w_eff: torch.Tensor, k: int) -> pd.DataFrame:
    """One row per neuron: neuron, norm, logit_var, null_frac, norm_decile."""
    _, evecs = unembed_spectrum(w_eff)
    lv = logit_var(w_out, w_eff).numpy()
    rho = null_fraction(w_out, evecs[:, :k]).numpy()
    norms = w_out.double().norm(dim=1).numpy()
    return pd.DataFrame(
        {
            "neuron": np.arange(len(norms), dtype=np.int64),
            "norm": norms,
            "logit_var": lv,
            "null_frac": rho,
            "norm_decile": norm_deciles(norms),
        }
    )


def screen_arch(
    arch: ArchInfo,
    layers: Sequence[int],
    null_k: int | float | None = None,
    fold_final_norm: bool = True,
    center_unembed: bool = True,
) -> tuple[pd.DataFrame, torch.Tensor]:
    """Screens of every neuron of `layers` (column `layer` added) and the singular values of W_eff (D,),
    ascending. The null space uses the same W_eff for every layer."""
    w_eff = effective_unembed(arch, fold_final_norm, center_unembed)
    k = resolve_null_k(null_k, arch.d_model)
    svals, _ = unembed_spectrum(w_eff)
    frames = []
    for layer in layers:
        df = screen_weights(neuron_directions(arch, layer, fold_final_norm), w_eff, k)
        df.insert(0, "layer", layer)
        frames.append(df)
    return pd.concat(frames, ignore_index=True), svals.float()


# ---------------------------------------------------------------------------------------------- selection


def select_du(screen: pd.DataFrame, top_frac: float = 0.25, n: int = 10) -> list[int]:
    """Du et al.'s rule: the top `top_frac` of neurons by norm, then the `n` with the lowest LogitVar
    (ordered by LogitVar, ties by index)."""
    if not 0 < top_frac <= 1:
        raise ValueError(f"top_frac={top_frac} must be in (0, 1]; 0.25 keeps the top quarter by norm")
    n_top = max(1, math.ceil(top_frac * len(screen)))
    top = screen.sort_values(["norm", "neuron"], ascending=[False, True], kind="stable").head(n_top)
    pick = top.sort_values(["logit_var", "neuron"], kind="stable").head(n)
    return [int(i) for i in pick.neuron]


def select_null(screen: pd.DataFrame, n: int = 10) -> list[int]:
    """The `n` neurons with the largest null-space fraction ρ (ties by index)."""
    pick = screen.sort_values(["null_frac", "neuron"], ascending=[False, True], kind="stable").head(n)
    return [int(i) for i in pick.neuron]


def _decile_pool(deciles: np.ndarray, decile: int, banned: set[int]) -> list[int]:
    """Candidates in `decile`, widening to neighbouring deciles until one is free."""
    for width in range(10):
        lo, hi = decile - width, decile + width
        pool = [i for i in np.flatnonzero((deciles >= lo) & (deciles <= hi)) if int(i) not in banned]
        if pool:
            return [int(i) for i in pool]
    return []


def matched_controls(
    screen: pd.DataFrame, targets: Sequence[int], n_per_target: int, exclude: Sequence[int], seed: int
) -> dict[int, list[int]]:
    """For each target neuron, `n_per_target` distinct random neurons of the same norm decile (widened to the
    neighbouring deciles only when the decile runs out), never one of `exclude`."""
    rng = np.random.default_rng(seed)
    deciles = screen.sort_values("neuron").norm_decile.to_numpy()
    out: dict[int, list[int]] = {}
    for t in targets:
        banned = set(map(int, exclude))
        picks: list[int] = []
        for _ in range(n_per_target):
            pool = _decile_pool(deciles, int(deciles[t]), banned)
            if not pool:
                break
            c = int(rng.choice(pool))
            picks.append(c)
            banned.add(c)
        out[int(t)] = picks
    return out


def control_sets(
    screen: pd.DataFrame, selected: Sequence[int], n_sets: int, exclude: Sequence[int], seed: int
) -> list[list[int]]:
    """`n_sets` random sets, each drawing one neuron per selected neuron from that neuron's norm decile
    (without repeats inside a set, never one of `exclude`)."""
    rng = np.random.default_rng(seed)
    deciles = screen.sort_values("neuron").norm_decile.to_numpy()
    sets = []
    for _ in range(n_sets):
        banned = set(map(int, exclude))
        chosen = []
        for t in selected:
            pool = _decile_pool(deciles, int(deciles[t]), banned)
            if not pool:
                break
            c = int(rng.choice(pool))
            chosen.append(c)
            banned.add(c)
        if len(chosen) == len(selected):
            sets.append(chosen)
    return sets


# ---------------------------------------------------------------------------------------------- base vs post


def iou(a: Sequence[int], b: Sequence[int]) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets)."""
    sa, sb = set(a), set(b)
    return 1.0 if not sa | sb else len(sa & sb) / len(sa | sb)


def match_neurons(w_from: torch.Tensor, w_to: torch.Tensor, neurons: Sequence[int]) -> pd.DataFrame:
    """For each neuron of `w_from` (M, D), its best match in `w_to` (M', D) by cosine of the write vectors,
    and its cosine with the neuron of the same index (when it exists)."""
    a = w_from.double() / w_from.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    b = w_to.double() / w_to.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    rows = []
    for i in neurons:
        cos = b @ a[i]  # (M',)
        j = int(cos.argmax())
        rows.append(
            {
                "neuron": int(i),
                "match": j,
                "cos_match": float(cos[j]),
                "cos_same_index": float(cos[i]) if i < len(cos) else float("nan"),
                "same_index": j == int(i),
            }
        )
    return pd.DataFrame(rows, columns=["neuron", "match", "cos_match", "cos_same_index", "same_index"])
