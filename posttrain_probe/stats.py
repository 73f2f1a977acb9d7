"""Pure statistics shared by every analysis: cosine, Pearson correlation, difference in means, token-class means,
bootstrap intervals and peaks.

Inputs may be numpy arrays or torch tensors (anything `torch.as_tensor` takes); scalars come back as Python
floats, the batched variants (`cosine_batched`, `diff_in_means`) as tensors.

The zero-vector rule (one rule for every function here): a zero vector has no direction, so a cosine with a
zero vector is NaN ("undefined"), never 0. Pearson's r is the cosine of the centred series, so a constant
series (zero after centring) gives NaN too. Non-finite entries propagate as NaN, except in `pearson`, which
drops the cells that are not finite in both series. Every function computes in float64 (tensors stay on their
device).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _f64(x: Any) -> torch.Tensor:
    """`x` (numpy array, tensor, sequence) as a float64 tensor (a tensor stays on its device)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def cosine(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity (a·b)/(‖a‖‖b‖) of two vectors (flattened); NaN when either is a zero vector."""
    u, v = _f64(a).flatten(), _f64(b).flatten()
    if u.numel() != v.numel():
        raise ValueError(f"vectors of {u.numel()} and {v.numel()} entries; pass two vectors of one space")
    den = float(u.norm() * v.norm())
    return float(u @ v / den) if den > 0 else math.nan


def cosine_batched(a: ArrayLike, b: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Cosine along the last axis (the leading axes broadcast), computed in float64: (..., D), (..., D) -> (...).
    NaN where either vector is zero. Returned in `dtype`, default the inputs' floating dtype (float32 inputs give
    float32, numpy inputs float64)."""
    ta = a if isinstance(a, torch.Tensor) else _f64(a)
    tb = b if isinstance(b, torch.Tensor) else _f64(b)
    if dtype is None:
        dtype = torch.promote_types(ta.dtype, tb.dtype)
        dtype = dtype if dtype.is_floating_point else torch.float64
    a64, b64 = _f64(ta), _f64(tb)
    den = a64.norm(dim=-1) * b64.norm(dim=-1)
    out = torch.where(den > 0, (a64 * b64).sum(-1) / den, torch.full_like(den, math.nan))
    return out.to(dtype)


def pearson(a: ArrayLike, b: ArrayLike, min_n: int = 3) -> float:
    """Pearson correlation of two series (flattened) over the cells finite in both: the cosine of the centred
    series. NaN with fewer than `min_n` such cells or a constant series (zero vector after centring)."""
    x, y = _f64(a).flatten(), _f64(b).flatten()
    if x.numel() != y.numel():
        raise ValueError(f"series of {x.numel()} and {y.numel()} entries; pass paired values")
    ok = torch.isfinite(x) & torch.isfinite(y)
    if not bool(ok.all()):
        x, y = x[ok], y[ok]
    if x.numel() < max(min_n, 2):
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else math.nan


def diff_in_means(pos: ArrayLike, neg: ArrayLike, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """mean(pos) − mean(neg) over the first (example) axis: (N, ..., D), (M, ..., D) -> (..., D). Each mean is
    taken in float64 and cast to `dtype` before the subtraction (float32 keeps the refusal probe's numbers)."""
    p, n = _f64(pos), _f64(neg)
    if p.shape[1:] != n.shape[1:]:
        raise ValueError(f"activation shapes differ: {tuple(p.shape)} vs {tuple(n.shape)}")
    if p.shape[0] == 0 or n.shape[0] == 0:
        raise ValueError("difference in means needs both classes; pass at least one example of each")
    return p.mean(0).to(dtype) - n.mean(0).to(dtype)


def split_by_label(acts: ArrayLike, labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows with label 1, rows with label 0) of `acts` (N, ...) for labels (N,); both classes must occur."""
    x = acts if isinstance(acts, torch.Tensor) else torch.as_tensor(np.asarray(acts))
    lab = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels
    lab = lab.bool().cpu()
    if lab.shape != x.shape[:1]:
        raise ValueError(f"{tuple(lab.shape)} labels for {x.shape[0]} rows; pass one label per row")
    if lab.all() or (~lab).all():
        raise ValueError("difference in means needs both classes; pass labelled examples of each")
    return x[lab], x[~lab]


def class_means(ie: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of a per-fact map `ie` (T, L) over the positions of each class: masks (C, T) bool -> (C, L).

    An empty class gives NaN (e.g. the middle subject tokens of a two-token subject)."""
    m = masks.to(ie.dtype)  # (C, T)
    counts = m.sum(1, keepdim=True)  # (C, 1)
    sums = m @ torch.nan_to_num(ie)  # (C, L)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.nan))


def nanmean0(x: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0 ignoring NaN; NaN where every entry is NaN."""
    ok = ~torch.isnan(x)
    n = ok.sum(0)
    s = torch.where(ok, x, torch.zeros_like(x)).sum(0)
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, math.nan))


def bootstrap_ci(
    per_item: torch.Tensor, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, chunk: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap interval of the NaN-aware mean over dim 0 (items resampled with replacement).

    per_item: (F, ...) -> (lo, hi), each (...). Fewer than 2 items give NaN bounds."""
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci} must be in (0, 1), e.g. 0.95")
    F = per_item.shape[0]
    shape = per_item.shape[1:]
    if F < 2 or n_boot < 1:
        nan = torch.full(shape, math.nan, dtype=per_item.dtype)
        return nan, nan.clone()
    g = torch.Generator().manual_seed(seed)
    flat = per_item.reshape(F, -1).double()  # (F, P)
    ok = (~torch.isnan(flat)).double()
    vals = torch.nan_to_num(flat)
    means = []
    for b in range(0, n_boot, chunk):
        nb = min(chunk, n_boot - b)
        idx = torch.randint(0, F, (nb, F), generator=g)
        w = torch.zeros(nb, F, dtype=torch.float64)
        w.scatter_add_(1, idx, torch.ones(nb, F, dtype=torch.float64))  # (nb, F) resample counts
        n = w @ ok  # (nb, P)
        s = w @ vals
        means.append(torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, math.nan)))
    boot = torch.cat(means)  # (n_boot, P)
    a = (1 - ci) / 2
    lo = torch.nanquantile(boot, a, dim=0)
    hi = torch.nanquantile(boot, 1 - a, dim=0)
    return lo.reshape(shape).to(per_item.dtype), hi.reshape(shape).to(per_item.dtype)


def argmax_2d(x: torch.Tensor) -> tuple[int, int, float]:
    """(row, column, value) of the largest finite entry of a 2-D map."""
    flat = torch.nan_to_num(x.flatten().double(), nan=-math.inf)
    if not torch.isfinite(flat).any():
        raise ValueError("the map has no finite entry; nothing to locate")
    i = int(flat.argmax())
    return i // x.shape[1], i % x.shape[1], float(flat[i])
