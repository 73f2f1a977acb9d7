"""Checkpoint-drift pieces: relative weight change, linear CKA, direction cosines."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from posttrain_probe.analysis.drift import (
    cosine,
    diff_in_means,
    linear_cka,
    module_of,
    relative_weight_change,
)


def test_relative_weight_change_per_module(tmp_path):
    a = {
        "model.layers.0.mlp.down_proj.weight": torch.ones(4, 4),
        "model.embed_tokens.weight": torch.ones(3, 4),
    }
    b = {
        "model.layers.0.mlp.down_proj.weight": 1.5 * torch.ones(4, 4),
        "model.embed_tokens.weight": torch.ones(3, 4),
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_file(a, str(tmp_path / "a" / "model.safetensors"))
    save_file(b, str(tmp_path / "b" / "model.safetensors"))
    change = relative_weight_change(tmp_path / "a", tmp_path / "b")
    assert change == {"embed": 0.0, "layers.0.mlp": pytest.approx(0.5)}


def test_module_grouping():
    assert module_of("transformer.h.2.attn.c_attn.weight") == "layers.2.attn"
    assert module_of("lm_head.weight") == "unembed"


def test_linear_cka_invariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert linear_cka(x, x @ q * 3.0) == pytest.approx(1.0)  # rotation and scale invariant
    assert linear_cka(x, torch.randn(50, 8, generator=g)) < 0.5


def test_diff_in_means_recovers_planted_direction():
    g = torch.Generator().manual_seed(1)
    d = torch.randn(16, generator=g)
    labels = torch.arange(400) % 2
    acts = torch.randn(400, 16, generator=g) + labels[:, None] * 2.0 * d
    assert cosine(diff_in_means(acts, labels), d) > 0.95
    with pytest.raises(ValueError, match="both classes"):
        diff_in_means(acts, torch.ones(400))
