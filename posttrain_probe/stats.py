"""Pure statistics for localization maps: token-class means, bootstrap intervals, correlations, peaks."""

from __future__ import annotations

import math

import torch


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


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation over the cells finite in both; NaN with < 3 cells or zero variance."""
    a, b = a.flatten().double(), b.flatten().double()
    ok = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[ok], b[ok]
    if a.numel() < 3:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = (a.square().sum() * b.square().sum()).sqrt()
    return float((a * b).sum() / den) if den > 0 else math.nan


def argmax_2d(x: torch.Tensor) -> tuple[int, int, float]:
    """(row, column, value) of the largest finite entry of a 2-D map."""
    flat = torch.nan_to_num(x.flatten().double(), nan=-math.inf)
    if not torch.isfinite(flat).any():
        raise ValueError("the map has no finite entry; nothing to locate")
    i = int(flat.argmax())
    return i // x.shape[1], i % x.shape[1], float(flat[i])
