"""Checkpoint drift, pure parts: weight change per module, grouping, CKA, diff-in-means, tracing-map and
neuron-effect rows by hand."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from posttrain_probe.analysis.drift import (
    linear_cka,
    module_of,
    relative_weight_change,
)
from posttrain_probe.stats import cosine, diff_in_means, split_by_label


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
    (tmp_path / "c").mkdir()
    save_file({**b, "model.embed_tokens.weight": torch.ones(5, 4)}, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(ValueError, match="one architecture and vocabulary"):
        relative_weight_change(tmp_path / "a", tmp_path / "c")


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
    assert cosine(diff_in_means(*split_by_label(acts, labels)), d) > 0.95
    with pytest.raises(ValueError, match="both classes"):
        split_by_label(acts, torch.ones(400))


def test_tracing_map_change_by_hand():
    from posttrain_probe.analysis.drift import tracing_map_change

    start = torch.tensor([[0.0, 0.1, 0.2], [float("nan"), 0.4, 0.1]])
    same = tracing_map_change(start, start.clone())
    assert same["pearson_to_start"] == pytest.approx(1.0) and same["max_abs_change"] == 0.0
    assert (same["peak_class"], same["peak_layer"], same["peak_aie"]) == (1, 1, pytest.approx(0.4))
    moved = tracing_map_change(start, start + torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]))
    assert moved["max_abs_change"] == pytest.approx(0.5) and moved["mean_abs_change"] == pytest.approx(0.1)
    assert (moved["peak_class"], moved["peak_layer"]) == (0, 2) and moved["pearson_to_start"] < 1
    empty = tracing_map_change(torch.full((2, 2), float("nan")), torch.full((2, 2), float("nan")))
    assert empty["peak_class"] is None
    with pytest.raises(ValueError, match="same facts"):
        tracing_map_change(start, start[:, :2])


def test_mean_class_map_averages_token_classes_over_facts():
    from posttrain_probe.analysis.drift import mean_class_map

    nan = float("nan")
    # fact 0: 3 tokens, subject [0, 1); fact 1: 4 tokens, subject [1, 3); one layer
    ie = torch.tensor([[[1.0], [2.0], [3.0], [nan]], [[0.0], [4.0], [6.0], [8.0]]])
    m = mean_class_map(ie, [3, 4], [(0, 1), (1, 3)])
    # classes: first_subject, middle_subject, last_subject, first_subsequent, further, last
    expected = [(1 + 4) / 2, nan, (1 + 6) / 2, (2 + 8) / 2, nan, (3 + 8) / 2]
    torch.testing.assert_close(m[:, 0], torch.tensor(expected), equal_nan=True)


def test_neuron_effect_rows_from_ablation_stats():
    import numpy as np

    from posttrain_probe.analysis.drift import neuron_effect_rows
    from posttrain_probe.probes.neurons.ablate import AblationStats

    effects = np.zeros((2, 2, 3, 2))  # (condition, copy, metric, text)
    effects[0, 0, 0] = [0.2, 0.4]  # dH total of set 0, per text
    effects[0, 1, 0] = [0.1, 0.1]  # dH direct
    stats = AblationStats(clean=np.array([[2.0, 3.0], [4.0, 5.0]]), n_tokens=np.array([1, 3]), effects=effects)
    rows = neuron_effect_rows(7, ["own_du", "control"], [[1, 2], [3, 4]], stats)
    assert [r["set"] for r in rows] == ["own_du", "control"] and rows[0]["neurons"] == "1 2"
    assert rows[0]["dH_total"] == pytest.approx((0.2 + 3 * 0.4) / 4)  # token-weighted
    assert rows[0]["dH_via_norm"] == pytest.approx(rows[0]["dH_total"] - 0.1)
    assert rows[0]["entropy_clean"] == pytest.approx((2 + 3 * 4) / 4) and rows[1]["dH_total"] == 0.0
    with pytest.raises(ValueError, match="one of each"):
        neuron_effect_rows(0, ["a"], [[1], [2]], stats)
