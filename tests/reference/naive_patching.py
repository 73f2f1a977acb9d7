"""True/false activation patching (Du et al. 2025; SPEC §1b) written directly, as an oracle for `patch_maps`.

Independent of `posttrain_probe`: plain forward hooks on Hugging Face modules (`naive_tracing`'s helpers, which
import nothing from the package), one full forward per (token, layer). The residual stream leaving block l
at token t of the true statement's run in the *source* model replaces the same cell in the false
statement's run in the *target* model; the metric is logit(TRUE) − logit(FALSE) at the last position.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .naive_tracing import blocks, clean_run, last_logits, site_modules


def logit_diff(model: nn.Module, ids: torch.Tensor, true_id: int, false_id: int, **kw) -> float:
    """logit(true_id) − logit(false_id) at the last position of one prompt `ids` (T,)."""
    logits = last_logits(model, ids[None], **kw)[0]
    return float(logits[true_id] - logits[false_id])


@torch.no_grad()
def patch_map(
    source: nn.Module,
    target: nn.Module,
    true_ids: torch.Tensor,
    false_ids: torch.Tensor,
    true_id: int,
    false_id: int,
    positions: Iterable[int] | None = None,
) -> torch.Tensor:
    """(T, L): the target's logit difference on the false prompt with resid(t, l) from the source's true run,
    minus the unpatched one. Rows not in `positions` (default: every token) stay 0."""
    _, clean = clean_run(source, true_ids[None])
    modules = site_modules(target)
    T, L = int(false_ids.shape[0]), len(blocks(target))
    base = logit_diff(target, false_ids, true_id, false_id)
    out = torch.zeros(T, L)
    for t in range(T) if positions is None else positions:
        for l in range(L):
            writes = [(modules[f"resid.{l}"], [t], clean[f"resid.{l}"][0, t : t + 1])]
            out[t, l] = logit_diff(target, false_ids, true_id, false_id, writes=writes) - base
    return out
