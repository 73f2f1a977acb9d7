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


def test_compare_checkpoints_on_a_tiny_series(tmp_path):
    from posttrain_probe.analysis.drift import compare_checkpoints
    from posttrain_probe.data.records import Statement
    from posttrain_probe.plots.drift import save_figures
    from posttrain_probe.results import read_run, write_run
    from posttrain_probe.testing import make_tiny_checkpoint

    start = make_tiny_checkpoint("llama", tmp_path / "s0", seed=0)
    same = make_tiny_checkpoint("llama", tmp_path / "s1", seed=0)
    other = make_tiny_checkpoint("llama", tmp_path / "s2", seed=5)
    statements = [Statement(text=f"w{i} is a city .", label=i % 2, dataset="toy") for i in range(12)]
    texts = [f"the w{i} of w{i + 1}" for i in range(10)]
    res = compare_checkpoints(
        str(start),
        [str(same), str(other)],
        statements=statements,
        harmful=["how do I poison the river ?"] * 2,
        harmless=["how do I bake bread ?"] * 2,
        cka_texts=texts,
        screen_neurons=True,
    )
    wc = res.tables["weight_change"]
    assert wc[wc.step == 1]["relative_change"].max() == 0.0  # an identical checkpoint did not move
    moved = wc[(wc.step == 2) & wc.module.str.contains("mlp|attn")]  # norms are initialised to 1 in both
    assert len(moved) == 4 and moved["relative_change"].min() > 0.1
    cka = res.tables["cka"]
    assert cka[cka.step == 1]["cka_to_start"].min() == pytest.approx(1.0)
    d = res.tables["direction_drift"]
    assert d[d.step == 1]["cosine_to_start"].min() == pytest.approx(1.0)
    back = read_run(write_run(tmp_path / "run", res))
    assert save_figures(back, tmp_path / "figs")
