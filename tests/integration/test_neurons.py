"""Entropy neurons on tiny models: mean-ablation invariants (no-op cases), a planted null-space neuron,
the run dir, the CLI, checkpoint series and the figures (pure parts: tests/unit/test_neurons.py)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.cli import build_parser
from posttrain_probe.pair import HookedModel, load_model, load_pair
from posttrain_probe.pair.arch import discover
from posttrain_probe.probes.neurons import (
    NeuronsConfig,
    run_neurons,
    screen_checkpoints,
    selection_overlap,
)
from posttrain_probe.probes.neurons.ablate import (
    _ablation_interventions,
    ablation_effects,
    reference_means,
)
from posttrain_probe.probes.neurons.screen import (
    iou,
    screen_arch,
    select_du,
    select_null,
)
from posttrain_probe.results import read_run, write_run
from posttrain_probe.testing import _WORDS, make_tiny_checkpoint

PLANTED = 7


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 14))) for _ in range(n)]


def _encode(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def plant_null_space_neuron(family: str, out_dir, rank_deficit: int = 4, w_norm: float = 5.0):
    """A tiny checkpoint whose W_U has a null space (rows of lm_head projected off `rank_deficit` directions,
    orthogonal to the all-ones vector so LayerNorm's centering keeps them, then scaled up so the next-token
    distribution is far from uniform) and whose last-layer neuron
    PLANTED writes a large vector inside it and fires strongly and variably (large input weights)."""
    path = make_tiny_checkpoint(family, out_dir, seed=3)
    model = AutoModelForCausalLM.from_pretrained(path)
    arch = discover(model)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(arch.d_model, rank_deficit, generator=g)
    q, _ = torch.linalg.qr(q - q.mean(0))
    mlp = arch.modules["layers"][-1].mlp
    with torch.no_grad():
        w_lm = arch.modules["lm_head"].weight  # (V, D)
        w_lm -= (w_lm @ q) @ q.T
        w_lm *= 20.0  # peaked next-token distributions, so rescaling the logits moves the entropy
        down = arch.modules["down_projs"][-1]
        if arch.down_proj_is_conv1d:
            down.weight[PLANTED] = w_norm * q[:, 0]
            mlp.c_fc.weight[:, PLANTED] = torch.randn(arch.d_model, generator=g)
        else:
            down.weight[:, PLANTED] = w_norm * q[:, 0]
            for name in ("gate_proj", "up_proj"):
                getattr(mlp, name).weight[PLANTED] = torch.randn(arch.d_model, generator=g)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("neurons")
    return {f: make_tiny_checkpoint(f, root / f) for f in ("gpt2", "llama", "gemma2")}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return {f: plant_null_space_neuron(f, root / f) for f in ("gpt2", "llama")}


# ---------------------------------------------------------------------------------------------- screens


# ---------------------------------------------------------------------------------------------- ablation


@torch.no_grad()
def _mean_ablation_logits(
    model: HookedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    neuron_sets: Sequence[Sequence[int]],
    means: torch.Tensor,
    freeze_norm_scale: bool = False,
) -> torch.Tensor:
    """Logits (S, B, T, V) with each of the S neuron sets mean-ablated in one batched forward through the
    production interventions; with `freeze_norm_scale` the final norm's scale is patched to its clean value."""
    B = input_ids.shape[0]
    S = len(neuron_sets)
    masks = torch.zeros(S, model.d_mlp, dtype=torch.bool)
    for s, ns in enumerate(neuron_sets):
        masks[s, list(ns)] = True
    frozen, scale = [], None
    if freeze_norm_scale:
        scale = model.run(input_ids, attention_mask, read=["final_norm_scale"]).cache["final_norm_scale"]
        scale = scale.repeat(S, 1)  # (S·B, T)
        frozen = list(range(S * B))
    ivs = _ablation_interventions(layer, masks.repeat_interleave(B, 0), means, frozen, scale)
    out = model.run(input_ids.repeat(S, 1), attention_mask.repeat(S, 1), interventions=ivs)
    return out.logits.reshape(S, B, *out.logits.shape[1:])


@pytest.mark.parametrize("family,backend", [("gpt2", "bridge"), ("llama", "nnsight"), ("gemma2", "bridge")])
def test_ablating_zero_neurons_and_freezing_the_scale_alone_are_no_ops(tiny, family, backend):
    m = load_model(tiny[family], backend=backend)
    ids, am = _encode(m.tokenizer, _texts(3))
    layer = m.n_layers - 1
    means = reference_means(m, ids, am, [layer])[layer]
    clean = m.forward(ids, am)
    none = _mean_ablation_logits(m, ids, am, layer, [[]], means)
    assert torch.equal(none[0], clean)
    frozen = _mean_ablation_logits(m, ids, am, layer, [[]], means, freeze_norm_scale=True)
    assert (frozen[0] - clean).abs().max().item() <= 1e-5
    # a real ablation does change the logits (the test above can fail)
    some = _mean_ablation_logits(m, ids, am, layer, [list(range(0, m.d_mlp, 2))], means)
    assert (some[0] - clean).abs().max().item() > 1e-4
    stats = ablation_effects(m, ids, am, layer, [[], [1, 2]], means, batch_rows=4)
    assert np.abs(stats.effects[0]).max() <= 1e-5


def test_both_backends_give_the_same_total_and_direct_effects(planted):
    out = []
    for backend in ("bridge", "nnsight"):
        m = load_model(planted["llama"], backend=backend)
        ids, am = _encode(m.tokenizer, _texts(8))
        means = reference_means(m, ids[:4], am[:4], [1])[1]
        out.append(ablation_effects(m, ids[4:], am[4:], 1, [[PLANTED], [1, 2, 3]], means, batch_rows=4))
    np.testing.assert_allclose(out[0].effects, out[1].effects, atol=1e-4)  # effects here are 1e-2 .. 1
    np.testing.assert_allclose(out[0].clean, out[1].clean, atol=1e-5)
    assert np.abs(out[0].effects[0, 0, 0]).max() > 1e-2  # the comparison is not between zeros


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_planted_null_space_neuron_ranks_first_and_acts_only_through_the_norm(planted, family):
    m = load_model(planted[family], backend="bridge")
    layer = m.n_layers - 1
    k = 5 if family == "gpt2" else 4  # LayerNorm's centering adds the all-ones direction to the null space
    screen, _ = screen_arch(m.arch, [layer], null_k=k)
    assert select_null(screen, 3)[0] == PLANTED
    assert select_du(screen, 0.25, 3)[0] == PLANTED
    assert screen.null_frac[PLANTED] > 0.999
    ids, am = _encode(m.tokenizer, _texts(12))
    means = reference_means(m, ids[:6], am[:6], [layer])[layer]
    stats = ablation_effects(m, ids[6:], am[6:], layer, [[PLANTED], [0]], means, batch_rows=8)
    mean, _ = stats.aggregate()
    total, direct = mean[0, 0], mean[0, 1]  # (metric,) for the planted neuron
    assert total[2] > 0.05  # mean |ΔH| per token, nats
    assert direct[2] < 1e-3 * total[2]
    assert abs(direct[0]) < 1e-3 * total[2]


# ---------------------------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, planted, tiny):
    pair = load_pair(tiny["llama"], planted["llama"], backend="nnsight")
    cfg = NeuronsConfig(
        null_k=4,
        screen_layers="all",
        n_ref=30,
        n_eval=16,
        n_select=3,
        n_null=3,
        n_controls=1,
        n_control_sets=3,
        batch_rows=32,
        progress=False,
    )
    result = run_neurons(pair, _texts(60, seed=1), cfg)
    out = write_run(tmp_path_factory.mktemp("run") / "neurons", result)
    return result, read_run(out)


def test_run_writes_screens_selections_effects_and_shares(tiny_run):
    result, back = tiny_run
    assert back == result
    s = back.summary
    assert PLANTED in s["selection"]["post"]["null"] and PLANTED in s["selection"]["post"]["du"]
    assert s["iou"]["null"] == pytest.approx(iou(s["selection"]["base"]["null"], s["selection"]["post"]["null"]))
    eff = back.tables["effects"]
    assert set(eff.group) >= {"du+null", "control", "other_model", "own"}
    # the same neurons are ablated in both models and read side by side
    sbs = back.tables["side_by_side"]
    assert set(sbs.neuron) == set(s["selection"]["base"]["du"] + s["selection"]["base"]["null"]) | set(
        s["selection"]["post"]["du"] + s["selection"]["post"]["null"]
    )
    by_neuron = sbs.set_index("neuron")
    assert by_neuron.absdH_total_post[PLANTED] > 10 * by_neuron.absdH_total_base[PLANTED]
    # every selected neuron has exactly n_controls controls, from its norm decile
    ctrl = back.tables["controls"]
    scr = back.tables["screen"]
    for r in ctrl.itertuples():
        dec = scr[(scr.role == r.role) & (scr.layer == s["layer"]) & (scr.neuron == r.control)].norm_decile.item()
        assert dec == r.decile
    assert sorted(set(scr.layer)) == [0, 1] and (scr[scr.layer == 0][["rank_du", "rank_null"]] == -1).all().all()
    share = back.tables["explained_share"]
    np.testing.assert_allclose(share.share_both, share.share_post + share.share_base, rtol=1e-9)
    planted_row = eff[(eff.role == "post") & (eff.condition == str(PLANTED))].iloc[0]
    assert planted_row.absdH_direct < 1e-3 * planted_row.absdH_total


def test_cli_runs_and_refuses_a_bad_layer_without_output(tmp_path, tiny):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(_texts(40, seed=2)) + "\n")
    parser = build_parser()
    common = ["--texts", str(texts), "--n-ref", "20", "--n-eval", "8", "--null-k", "4", "--n-select", "2"]
    common += ["--n-null", "2", "--n-control-sets", "2", "--no-progress", "--backend", "nnsight"]
    bad = tmp_path / "bad"
    gpt2 = str(tiny["gpt2"])
    args = parser.parse_args(["neurons", gpt2, gpt2, "--out", str(bad), "--layer", "5"] + common)
    with pytest.raises(ValueError, match="out of range"):
        args.func(args)
    assert not bad.exists()
    out = tmp_path / "run"
    args = parser.parse_args(["neurons", gpt2, gpt2, "--out", str(out), "--figures"] + common)
    assert args.func(args) == 0
    back = read_run(out)
    assert back.summary["iou"] == {"du": 1.0, "null": 1.0}  # a model against itself
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "neurons_explained_share.png",
        "neurons_screen.png",
        "neurons_set_effects.png",
        "neurons_single_effects.png",
    ]


def test_checkpoint_series_screens(tiny, planted):
    df = screen_checkpoints([tiny["llama"], planted["llama"]], null_k=4, n_select=3, n_null=3)
    assert set(df.checkpoint) == {0, 1} and len(df) == 2 * 128
    first = df[df.checkpoint == 0]
    assert np.allclose(first.cos_to_first, 1.0)
    second = df[df.checkpoint == 1].set_index("neuron")
    assert second.rank_null[PLANTED] == 0
    ov = selection_overlap(df)
    assert ov[ov.checkpoint == 0].iou_first.tolist() == [1.0, 1.0]
    assert ov[(ov.checkpoint == 1) & (ov.rule == "null")].iou_first.item() < 1.0
    with pytest.raises(ValueError, match="at least one"):
        screen_checkpoints([])


def test_series_cli_writes_screens_and_overlap(tmp_path, tiny, planted):
    parser = build_parser()
    out = tmp_path / "series"
    ckpts = [str(tiny["llama"]), str(planted["llama"])]
    args = parser.parse_args(["neurons-series", *ckpts, "--out", str(out), "--null-k", "4", "--n-null", "3"])
    assert args.func(args) == 0
    back = read_run(out)
    assert back.analysis == "neurons_series" and len(back.tables["screens"]) == 2 * 128
    assert back.summary["iou_first_last"]["null"] < 1.0


def test_figures_come_from_the_saved_run(tiny_run):
    from posttrain_probe.probes.neurons.figures import figures

    _, back = tiny_run
    figs = figures(back)
    assert set(figs) == {
        "neurons_screen",
        "neurons_set_effects",
        "neurons_single_effects",
        "neurons_explained_share",
    }
    with pytest.raises(ValueError, match="not a neurons run"):
        figures(type(back)(analysis="truth", config={}, summary={}))
