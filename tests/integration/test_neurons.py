"""Entropy neurons: weight screens against hand-computed references, selection rules and controls, mean
ablation invariants (no-op cases), a planted null-space neuron, the run dir, the CLI and the figures."""

from __future__ import annotations

import argparse
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from posttrain_probe.pair import load_model, load_pair
from posttrain_probe.pair.arch import discover
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.neurons import (
    NeuronsConfig,
    add_cli,
    default_text_source,
    explained_share,
    load_texts,
    run_neurons,
    screen_checkpoints,
    selection_overlap,
    split_texts,
)
from posttrain_probe.probes.neurons.ablate import (
    AblationStats,
    ablation_effects,
    mean_ablation_logits,
    next_token_stats,
    reference_means,
)
from posttrain_probe.probes.neurons.screen import (
    NormFoldError,
    control_sets,
    iou,
    logit_var,
    match_neurons,
    matched_controls,
    norm_deciles,
    norm_linear_map,
    null_fraction,
    resolve_null_k,
    screen_arch,
    select_du,
    select_null,
    unembed_spectrum,
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


def test_logit_var_and_null_fraction_match_hand_computed_values():
    w_u = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # (D=3, V=3)
    w = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.0, 1.0]])
    # cos with the columns: [1, 0, -1] (var 2/3); the zero vector → all 0; e3 is W_U's null direction
    lv = logit_var(w, w_u)
    assert lv[0].item() == pytest.approx(2 / 3)
    assert lv[1].item() == pytest.approx(0.0, abs=1e-12)
    svals, vecs = unembed_spectrum(w_u)
    assert svals[0].item() == pytest.approx(0.0, abs=1e-12)
    assert svals[-1].item() == pytest.approx(math.sqrt(2))
    rho = null_fraction(w, vecs[:, :1])
    assert rho.tolist() == pytest.approx([0.0, 1.0, 1 / math.sqrt(2)])


def test_norm_linear_map_reads_gamma_and_centering_off_the_module():
    D = 6
    ln = nn.LayerNorm(D)
    rms_gemma_like = make_gemma_norm(D)
    with torch.no_grad():
        ln.weight.copy_(torch.arange(1.0, D + 1))
        ln.bias.fill_(0.3)
    centering = torch.eye(D) - torch.full((D, D), 1 / D)
    torch.testing.assert_close(norm_linear_map(ln, D), centering @ torch.diag(ln.weight.detach()))
    expected = torch.diag(1 + rms_gemma_like.weight.detach())  # Gemma's RMSNorm multiplies by (1 + w)
    torch.testing.assert_close(norm_linear_map(rms_gemma_like, D), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(NormFoldError, match="fold_final_norm=False"):
        norm_linear_map(nn.Sequential(nn.Linear(D, D), nn.Tanh()), D)


def make_gemma_norm(D):
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    norm = GemmaRMSNorm(D, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, D))
    return norm


def test_null_k_rules():
    assert resolve_null_k(None, 768) == 40
    assert resolve_null_k(None, 128) == 13
    assert resolve_null_k(0.1, 64) == 7
    assert resolve_null_k(5, 32) == 5
    for bad in (0, 32, 1.5):
        with pytest.raises(ValueError, match="null_k"):
            resolve_null_k(bad, 32)


def _fake_screen(norms, lvs, rhos):
    norms = np.asarray(norms, dtype=float)
    return pd.DataFrame(
        {
            "neuron": np.arange(len(norms)),
            "norm": norms,
            "logit_var": lvs,
            "null_frac": rhos,
            "norm_decile": norm_deciles(norms),
        }
    )


def test_du_rule_takes_the_lowest_logit_var_among_the_largest_norms():
    # 8 neurons: top 25% by norm = neurons 6, 7; neuron 0 has the lowest LogitVar overall but a small norm
    s = _fake_screen([1, 2, 3, 4, 5, 6, 7, 8], [0.0, 1, 1, 1, 1, 1, 0.5, 0.2], [0.1] * 8)
    assert select_du(s, top_frac=0.25, n=1) == [7]
    assert select_du(s, top_frac=0.25, n=10) == [7, 6]
    assert select_du(s, top_frac=1.0, n=2) == [0, 7]
    s2 = _fake_screen([1] * 5, [1] * 5, [0.2, 0.9, 0.1, 0.9, 0.5])
    assert select_null(s2, n=3) == [1, 3, 4]


def test_controls_share_the_norm_decile_and_avoid_the_selection():
    rng = np.random.default_rng(1)
    s = _fake_screen(rng.lognormal(size=200), rng.random(200), rng.random(200))
    targets = [int(i) for i in np.argsort(-s.norm.to_numpy())[:5]]  # all in the top decile
    ctrl = matched_controls(s, targets, 3, targets, seed=0)
    deciles = s.norm_decile.to_numpy()
    for t, cs in ctrl.items():
        assert len(cs) == 3 and len(set(cs)) == 3
        assert all(deciles[c] == deciles[t] and c not in targets for c in cs)
    assert ctrl == matched_controls(s, targets, 3, targets, seed=0)
    sets = control_sets(s, targets, 4, targets, seed=0)
    assert len(sets) == 4
    for cs in sets:
        assert sorted(deciles[cs]) == sorted(deciles[targets]) and not set(cs) & set(targets)


def test_iou_and_matching_by_cosine():
    assert iou([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert iou([], []) == 1.0 and iou([1], []) == 0.0
    a = torch.eye(4)
    b = torch.eye(4)[[2, 0, 1, 3]] * 3.0  # neuron i of `a` sits at a permuted index in `b`
    m = match_neurons(a, b, [0, 3])
    assert m.match.tolist() == [1, 3] and m.cos_match.tolist() == pytest.approx([1.0, 1.0])
    assert m.same_index.tolist() == [False, True]


# ---------------------------------------------------------------------------------------------- ablation


def test_next_token_stats_uniform_and_peaked_logits():
    V = 5
    logits = torch.zeros(1, 3, V)
    logits[0, 1, 2] = 100.0  # position 1 predicts token 2 with certainty
    ids = torch.tensor([[0, 4, 2]])
    h, loss, valid = next_token_stats(logits, ids, torch.ones(1, 3))
    assert h[0, 0].item() == pytest.approx(math.log(V)) and loss[0, 0].item() == pytest.approx(math.log(V))
    assert h[0, 1].item() == pytest.approx(0.0, abs=1e-6) and loss[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    _, _, valid = next_token_stats(logits, ids, torch.tensor([[1, 1, 0]]))
    assert valid.tolist() == [[True, False]]


def test_ablation_stats_are_token_weighted():
    eff = np.zeros((1, 2, 3, 2))
    eff[0, 0, 0] = [1.0, 4.0]  # dH_total per text; text 2 has 3× the tokens
    stats = AblationStats(clean=np.array([[2.0, 1.0], [6.0, 3.0]]), n_tokens=np.array([1, 3]), effects=eff)
    mean, se = stats.aggregate()
    assert mean[0, 0, 0] == pytest.approx((1 + 12) / 4)
    assert stats.clean_means() == pytest.approx(((2 + 18) / 4, (1 + 9) / 4))
    assert se[0, 0, 0] > 0 and se[0, 1, 0] == 0


@pytest.mark.parametrize("family,backend", [("gpt2", "bridge"), ("llama", "nnsight"), ("gemma2", "bridge")])
def test_ablating_zero_neurons_and_freezing_the_scale_alone_are_no_ops(tiny, family, backend):
    m = load_model(tiny[family], backend=backend)
    ids, am = _encode(m.tokenizer, _texts(3))
    layer = m.n_layers - 1
    means = reference_means(m, ids, am, [layer])[layer]
    clean = m.forward(ids, am)
    none = mean_ablation_logits(m, ids, am, layer, [[]], means)
    assert torch.equal(none[0], clean)
    frozen = mean_ablation_logits(m, ids, am, layer, [[]], means, freeze_norm_scale=True)
    assert (frozen[0] - clean).abs().max().item() <= 1e-5
    # a real ablation does change the logits (the test above can fail)
    some = mean_ablation_logits(m, ids, am, layer, [list(range(0, m.d_mlp, 2))], means)
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


def test_explained_share_against_hand_numbers():
    def effects(d_own, d_other, d_ctrl):
        rows = []
        for rule in ("du", "null"):
            rows.append({"kind": "set", "condition": f"{rule}_set", "dH_total": d_own, "dH_direct": 0.0})
            rows.append({"kind": "set", "condition": f"{rule}_set_other", "dH_total": d_other, "dH_direct": 0.0})
            for j, d in enumerate(d_ctrl):
                rows.append({"kind": "set", "condition": f"{rule}_set_control_{j}", "dH_total": d, "dH_direct": 0})
        return pd.DataFrame(rows)

    # post is 0.5 nats less uncertain; its own set raises it by 0.4 (base's set by 0.2); base's own set
    # raises base by 0.1 (post's set by 0.3)
    eff = {"base": effects(0.1, 0.3, [0.0, 0.0]), "post": effects(0.4, 0.2, [0.05, 0.15])}
    t = explained_share({"base": 3.0, "post": 2.5}, eff).set_index(["rule", "source", "effect"])
    own = t.loc[("du", "own", "total")]
    assert own.gap == pytest.approx(-0.5)
    assert own.share_both == pytest.approx(1 - ((2.5 + 0.4) - (3.0 + 0.1)) / -0.5)  # 0.6
    assert own.share_post == pytest.approx(0.8) and own.share_base == pytest.approx(-0.2)
    assert own.control_share_both_mean == pytest.approx(np.mean([0.1, 0.3]))
    post_set = t.loc[("du", "post", "total")]  # post's set in both: +0.3 in base, +0.4 in post
    assert post_set.share_both == pytest.approx((0.3 - 0.4) / -0.5)
    base_set = t.loc[("null", "base", "total")]  # base's set in both: +0.1 in base, +0.2 in post
    assert base_set.share_both == pytest.approx((0.1 - 0.2) / -0.5)
    assert np.isnan(explained_share({"base": 1.0, "post": 1.0}, eff).share_both).all()


def test_load_texts_reads_non_empty_lines_of_a_file_or_folder(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\n  three  \n")
    (tmp_path / "b.txt").write_text("four\n")
    assert load_texts(tmp_path / "a.txt") == ["one two", "three"]
    assert load_texts(tmp_path) == ["one two", "three", "four"]
    with pytest.raises(ValueError, match="not found"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt files"):
        load_texts(tmp_path / "empty")


def test_real_models_default_to_the_shared_tinystories_subset():
    if shared_data_dir() is None:
        pytest.skip("../shared/data is absent, so the TinyStories subset cannot be read")
    texts = load_texts(default_text_source("gpt2"))
    assert len(texts) > 300 and not any("Data set:" in t for t in texts[:5])


def test_bad_inputs_fail_early_with_a_fix():
    with pytest.raises(ValueError, match="lower n_ref"):
        split_texts(["a b"] * 5, 4, 4, 0)
    with pytest.raises(ValueError, match="top_frac"):
        NeuronsConfig(top_frac=0)
    with pytest.raises(ValueError, match="screen_layers"):
        NeuronsConfig(screen_layers="some")
    with pytest.raises(ValueError, match="null_k"):
        NeuronsConfig(null_k=-3)


def test_cli_runs_and_refuses_a_bad_layer_without_output(tmp_path, tiny):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(_texts(40, seed=2)) + "\n")
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="cmd"))
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
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="cmd"))
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
