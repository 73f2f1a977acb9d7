"""Interventions on canonical sites, and the receipts they leave.

An intervention names a site, which rows of the batch and which token positions it touches, and what
it does there. One function (`apply_intervention`) applies it to the site's tensor; the backends only
decide *where* that tensor is reachable. Every intervention that runs leaves a `Receipt`; one that was
requested but never reached raises `InterventionNotFired` instead of silently doing nothing.

Positions: None = every position; a list of ints = the same positions for every selected row
(negative counts from the end); a (R, P) LongTensor = P positions per selected row. Rows: None = every
row, else a list/LongTensor of row indices (R of them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

Positions = Sequence[int] | torch.Tensor | None
Rows = Sequence[int] | torch.Tensor | None


class InterventionNotFired(RuntimeError):
    """An intervention was requested at a site the forward never reached."""


@dataclass
class Intervention:
    site: str
    positions: Positions = None
    rows: Rows = None

    kind = "intervention"

    def transform(self, x: torch.Tensor) -> torch.Tensor:  # (R, P, ...) -> (R, P, ...)
        raise NotImplementedError


@dataclass
class Patch(Intervention):
    """Set the site to `value` (broadcastable to (R, P, D), or (R, P) for `final_norm_scale`)."""

    value: torch.Tensor | None = None
    kind = "patch"

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.value is None:
            raise ValueError(f"Patch at {self.site} has no value; pass value=<tensor>")
        return self.value.to(device=x.device, dtype=x.dtype).expand_as(x).clone()


@dataclass
class Add(Intervention):
    """Add `scale * vector` (vector broadcastable to (R, P, D))."""

    vector: torch.Tensor | None = None
    scale: float = 1.0
    kind = "add"

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.vector is None:
            raise ValueError(f"Add at {self.site} has no vector; pass vector=<tensor>")
        return x + self.scale * self.vector.to(device=x.device, dtype=x.dtype)


@dataclass
class Ablate(Intervention):
    """Directional ablation x ← x − (x·r̂) r̂ (r̂ = `direction` normalised)."""

    direction: torch.Tensor | None = None
    kind = "ablate"

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.direction is None:
            raise ValueError(f"Ablate at {self.site} has no direction; pass direction=<tensor>")
        return ablate_component(x, self.direction)


def ablate_component(x: torch.Tensor, direction: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """x − scale·(x·r̂) r̂ over the last axis, computed in float32 and cast back (scale 1 removes the component)."""
    r = direction.to(device=x.device, dtype=torch.float32)
    r = r / r.norm().clamp_min(1e-12)
    xf = x.float()
    return (xf - scale * (xf @ r).unsqueeze(-1) * r).to(x.dtype)


@dataclass
class Edit(Intervention):
    """Apply any `fn` to the selected slab (R, P, ...) and write back its result (same shape)."""

    fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    kind = "edit"

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is None:
            raise ValueError(f"Edit at {self.site} has no fn; pass fn=<callable>")
        out = self.fn(x)
        if out.shape != x.shape:
            raise ValueError(f"Edit fn at {self.site} changed the shape {tuple(x.shape)} -> {tuple(out.shape)}")
        return out


@dataclass
class Receipt:
    """What an intervention did in one forward: site, how many (row, position) cells, norms."""

    site: str
    kind: str
    n_cells: int
    _before: torch.Tensor = field(repr=False)
    _after: torch.Tensor = field(repr=False)

    @property
    def norm_before(self) -> float:
        return float(self._before)

    @property
    def norm_after(self) -> float:
        return float(self._after)

    def as_dict(self) -> dict:
        return {
            "site": self.site,
            "kind": self.kind,
            "n_cells": self.n_cells,
            "norm_before": self.norm_before,
            "norm_after": self.norm_after,
        }


def _index(x: torch.Tensor, rows: Rows, positions: Positions, site: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, P) row and column index grids for x of shape (B, T, ...)."""
    B, T = x.shape[0], x.shape[1]
    dev = x.device
    r = torch.arange(B, device=dev) if rows is None else torch.as_tensor(rows, device=dev, dtype=torch.long)
    if r.ndim != 1 or (r.numel() and (r.min() < 0 or r.max() >= B)):
        raise IndexError(f"rows {r.tolist()} out of range for batch size {B} at {site}; pass row indices 0..{B - 1}")
    if positions is None:
        p = torch.arange(T, device=dev).expand(len(r), T)
    else:
        p = torch.as_tensor(positions, device=dev, dtype=torch.long)
        if p.ndim == 1:
            p = p.expand(len(r), p.numel())
        if p.ndim != 2 or p.shape[0] != len(r):
            raise IndexError(
                f"positions of shape {tuple(p.shape)} at {site} do not match {len(r)} rows; "
                "pass a list of ints or an (R, P) tensor"
            )
        p = torch.where(p < 0, p + T, p)
        if p.numel() and (p.min() < 0 or p.max() >= T):
            raise IndexError(
                f"position out of range at {site}: sequence length is {T}; pass positions in -{T}..{T - 1}"
            )
    return r.unsqueeze(1).expand_as(p), p


def apply_intervention(x: torch.Tensor, iv: Intervention) -> tuple[torch.Tensor, Receipt]:
    """Return a new tensor with `iv` applied to x (B, T, ...), and its receipt."""
    ri, pi = _index(x, iv.rows, iv.positions, iv.site)
    before = x[ri, pi]  # (R, P, ...)
    after = iv.transform(before)
    out = x.clone()
    out[ri, pi] = after.to(out.dtype)
    receipt = Receipt(iv.site, iv.kind, int(ri.numel()), before.detach().float().norm(), after.detach().float().norm())
    return out, receipt


def check_all_fired(requested: Sequence[Intervention], receipts: Sequence[Sequence[Receipt]]) -> None:
    """Raise `InterventionNotFired` naming every intervention that left no receipt."""
    missing = [iv.site for iv, got in zip(requested, receipts) if not got]
    if missing:
        raise InterventionNotFired(
            f"interventions at {', '.join(missing)} never fired: the forward did not reach these sites "
            "(check the site names and that the backend runs these modules)"
        )
