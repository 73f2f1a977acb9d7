"""Canonical sites without models: batched rows and per-row positions, site-name validation."""

from __future__ import annotations

import pytest
import torch

from posttrain_probe.pair import (
    Patch,
    SiteError,
    parse_site,
)
from posttrain_probe.pair.interventions import apply_intervention


def test_batched_rows_and_per_row_positions():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    out, rec = apply_intervention(
        x, Patch("resid_pre.0", value=torch.zeros(1, 1, 3), rows=[1], positions=torch.tensor([[0, 3]]))
    )
    assert out[1, 0].abs().sum() == 0 and out[1, 3].abs().sum() == 0
    assert torch.equal(out[0], x[0]) and torch.equal(out[1, 1:3], x[1, 1:3]) and rec.n_cells == 2
    with pytest.raises(IndexError, match="sequence length is 4"):
        apply_intervention(x, Patch("resid_pre.0", value=torch.zeros(3), positions=[7]))


def test_site_names_are_validated():
    assert parse_site("resid_pre.-1", 4).layer == 3
    with pytest.raises(SiteError, match="unknown site"):
        parse_site("resid_foo.1", 4)
    with pytest.raises(SiteError, match="out of range"):
        parse_site("mlp_out.4", 4)
    with pytest.raises(SiteError, match="takes no layer"):
        parse_site("logits.2", 4)
