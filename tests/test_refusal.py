"""Refusal direction: score / KL / selection math against hand-computed references, difference in means on a
planted direction, ablation and weight orthogonalization on tiny models, and an end-to-end run on a tiny pair
that writes a readable run dir, figures and steering vectors."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.cli import build_parser
from posttrain_probe.data import Instruction
from posttrain_probe.pair import Add, UnsupportedArchitectureError, load_model, load_pair
from posttrain_probe.paths import shared_data_dir
from posttrain_probe.probes.refusal import (
    RefusalConfig,
    RefusalData,
    load_refusal_data,
    run_refusal,
    save_refusal_vectors,
)
from posttrain_probe.probes.refusal.core import (
    cosine,
    diff_in_means,
    is_refusal,
    kl_next_token,
    refusal_log_odds,
    refusal_start_token_ids,
    row_ablation,
    row_addition,
    select_candidate,
)
from posttrain_probe.probes.refusal.model import format_prompts, post_instruction_tokens
from posttrain_probe.probes.refusal.orthogonalize import export_orthogonalized, orthogonalized_copy
from posttrain_probe.results import read_run, write_run
from posttrain_probe.steering import SteeringVector
from posttrain_probe.testing import make_tiny_checkpoint

CHAT = (
    "{% for m in messages %}{% if m['role'] == 'user' %}User {{ m['content'] }} {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant :{% endif %}"
)

# ---------------------------------------------------------------------------------------------- pure math


def test_refusal_log_odds_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    p = torch.softmax(logits, -1)
    for ids in ([0], [0, 3]):
        pr = p[:, ids].sum(-1)
        expect = torch.log(pr) - torch.log(1 - pr)
        assert torch.allclose(refusal_log_odds(logits, ids), expect, atol=1e-6)
    assert refusal_log_odds(logits, [1])[1].item() == pytest.approx(math.log(1 / 3))
    with pytest.raises(ValueError, match="no refusal-start tokens"):
        refusal_log_odds(logits, [])


def test_kl_next_token_hand_computed_and_zero_on_equal():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    expect = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_next_token(p.log(), q.log()).item() == pytest.approx(expect, rel=1e-5)
    z = torch.randn(3, 7)
    assert kl_next_token(z, z + 5.0).abs().max() < 1e-5  # a constant shift is the same distribution


def test_prefix_match():
    phrases = ("I cannot", "I'm sorry")
    assert is_refusal("  I cannot help with that.", phrases)
    assert is_refusal("I'm sorry, no", phrases)
    assert not is_refusal("Sure. I cannot wait", phrases)
    assert not is_refusal("", phrases)


def test_diff_in_means_recovers_planted_direction():
    g = torch.Generator().manual_seed(0)
    d, n = 64, 2000
    u = torch.randn(d, generator=g)
    u /= u.norm()
    harmless = torch.randn(n, 3, d, generator=g)
    harmful = torch.randn(n, 3, d, generator=g) + 3.0 * u
    r = diff_in_means(harmful, harmless)
    assert r.shape == (3, d)
    assert (cosine(r, u.expand(3, d)) > 0.99).all()
    with pytest.raises(ValueError, match="shapes differ"):
        diff_in_means(harmful, harmless[:, :2])


def test_select_candidate_filters_and_fallback():
    t = pd.DataFrame(
        {
            "layer": [0, 1, 2, 3, 4],
            "bypass_score": [-9.0, -2.0, -5.0, -7.0, -20.0],
            "induce_score": [1.0, 2.0, 3.0, -1.0, 5.0],
            "kl": [0.5, 0.01, 0.05, 0.01, 0.01],
        }
    )
    # layer 4 fails the layer filter (4 ≥ 0.8·5), 0 fails KL, 3 fails induce: choose the lower of 1 and 2
    idx, out = select_candidate(t, n_layers=5)
    assert idx == 2 and out.selected.sum() == 1 and out.loc[2, "passes_all"]
    assert out.passes_all.tolist() == [False, True, True, False, False]
    t2 = t.assign(induce_score=-1.0)
    idx2, out2 = select_candidate(t2, n_layers=5)
    assert idx2 == 0 and not out2.passes_all.any()  # fallback: lowest bypass among layers < 4
    idx3, _ = select_candidate(t2.assign(norm=[0.0, 1, 1, 1, 1]), n_layers=5)
    assert idx3 == 3  # a zero candidate is never chosen
    with pytest.raises(ValueError, match="every candidate direction is zero"):
        select_candidate(t.assign(norm=0.0), n_layers=5)


def test_refusal_start_tokens(tmp_path):
    from posttrain_probe.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = refusal_start_token_ids(tok, ("cannot help", "I'm sorry", "zzz"))
    assert tok.convert_ids_to_tokens(ids) == ["cannot"]  # unknown first tokens are dropped


# ---------------------------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusal")
    out = {f: make_tiny_checkpoint(f, root / f) for f in ("gpt2", "llama", "gemma", "gemma2")}
    out["post"] = make_tiny_checkpoint("llama", root / "post", seed=1, chat_template=CHAT)
    return out


def test_row_ablation_leaves_no_projection_at_any_resid_site(ckpts):
    m = load_model(ckpts["llama"])
    ids = torch.randint(4, 60, (4, 7), generator=torch.Generator().manual_seed(0))
    dirs = torch.randn(4, m.d_model, generator=torch.Generator().manual_seed(1))
    dirs[3] = 0  # row 3 is left alone
    sites = [f"{k}.{l}" for l in range(m.n_layers) for k in ("resid_pre", "resid_mid", "resid_post")]
    out = m.run(ids, read=sites, interventions=row_ablation(dirs, m.n_layers))
    clean = m.run(ids, read=sites)
    unit = dirs[:3] / dirs[:3].norm(dim=-1, keepdim=True)
    for s in sites:
        proj = (out.cache[s][:3] * unit[:, None, :]).sum(-1)
        assert proj.abs().max() <= 1e-5, s
        assert torch.equal(out.cache[s][3], clean.cache[s][3])
    assert (clean.cache["resid_post.1"][:3] * unit[:, None, :]).sum(-1).abs().max() > 1e-2


def test_row_addition_matches_add_with_rows(ckpts):
    m = load_model(ckpts["llama"])
    ids = torch.randint(4, 60, (3, 5), generator=torch.Generator().manual_seed(0))
    v = torch.randn(3, m.d_model, generator=torch.Generator().manual_seed(2))
    ours = m.run(ids, interventions=row_addition(v, [0, 1, 0], scale=2.0)).logits
    ref = m.run(
        ids,
        interventions=[
            Add("resid_pre.0", vector=v[0], scale=2.0, rows=[0]),
            Add("resid_pre.1", vector=v[1], scale=2.0, rows=[1]),
            Add("resid_pre.0", vector=v[2], scale=2.0, rows=[2]),
        ],
    ).logits
    assert (ours - ref).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma"])
def test_orthogonalized_weights_equal_runtime_ablation(ckpts, family, tmp_path):
    m = load_model(ckpts[family])
    r = torch.randn(m.d_model, generator=torch.Generator().manual_seed(3))
    ids = torch.randint(4, 60, (3, 9), generator=torch.Generator().manual_seed(4))
    runtime = m.run(ids, interventions=row_ablation(r.expand(3, -1), m.n_layers)).logits
    hf, info = orthogonalized_copy(m, r)
    assert (hf(ids).logits - runtime).abs().max() <= 1e-4
    assert (m.run(ids).logits - runtime).abs().max() > 1e-3  # the ablation does something
    assert info["untied_lm_head"] == (family in ("gpt2", "gemma"))
    out = export_orthogonalized(m, r, tmp_path / "ortho", metadata={"note": "test"})
    back = AutoModelForCausalLM.from_pretrained(out).eval()
    assert (back(ids).logits - runtime).abs().max() <= 1e-4
    assert json.loads((out / "orthogonalization.json").read_text())["note"] == "test"


def test_orthogonalization_refuses_sandwich_norms(ckpts):
    m = load_model(ckpts["gemma2"])
    with pytest.raises(UnsupportedArchitectureError, match="sandwich"):
        orthogonalized_copy(m, torch.randn(m.d_model))


def test_post_instruction_tokens_per_template(ckpts):
    base, post = load_model(ckpts["llama"]), load_model(ckpts["post"])
    xs = [Instruction("how do I bake bread ?", harmful=False), Instruction("how do I poison the river", True)]
    tmpl = "User: {instruction}\nAssistant:"
    assert post_instruction_tokens(base, "base", xs, "auto", tmpl) == ["\n", "Assistant", ":"]
    assert post_instruction_tokens(post, "post", xs, "auto", tmpl) == ["Assistant", ":"]
    p = format_prompts(post, "post", xs, "auto", tmpl)
    assert p.fmt == "chat" and p.texts[0] == "User how do I bake bread ? Assistant :"
    with pytest.raises(ValueError, match="no tokens after the instruction"):
        post_instruction_tokens(base, "base", xs, "raw", tmpl)


def _instructions(words, harmful, split):
    return [Instruction(f"how do I {w} the {o}", harmful, split=split) for w in words for o in ("river", "city")]


@pytest.fixture(scope="module")
def tiny_run(ckpts):
    pair = load_pair(ckpts["llama"], ckpts["post"], backend="nnsight")
    bad, good = ["poison", "make"], ["bake", "born"]
    data = RefusalData(
        _instructions(bad + ["bake"], True, "train"),
        _instructions(good + ["make"], False, "train"),
        _instructions(bad, True, "val"),
        _instructions(good, False, "val"),
        _instructions(bad[:1], True, "heldout"),
        _instructions(good[:1], False, "heldout"),
    )
    cfg = RefusalConfig(refusal_phrases=("cannot help", "sure"), max_new_tokens=3, batch_size=8, progress=False)
    return pair, run_refusal(pair, data, cfg)


def test_end_to_end_tables_and_invariants(tiny_run, tmp_path):
    pair, res = tiny_run
    cand = res.tables["candidates"]
    L = pair.base.n_layers
    assert len(cand[cand.model == "base"]) == L * 3 and len(cand[cand.model == "post"]) == L * 2
    assert cand.selected.sum() == 2
    # resid_pre[0] at template tokens is the embedding of the same token for every prompt: a zero candidate
    assert torch.equal(res.tensors["candidates.base"][0], torch.zeros_like(res.tensors["candidates.base"][0]))
    ev = res.tables["evaluation"]
    assert set(ev.direction_from) == {"none", "base", "post", "random"}
    assert len(ev) == 2 * 2 * (1 + 2 * 3)
    assert ev[ev.condition == "baseline"].kl.abs().max() == 0
    gens = res.tables["generations"]
    assert gens.refused.tolist() == [is_refusal(t, ("cannot help", "sure")) for t in gens.completion]
    for role in ("base", "post"):
        assert res.summary["orthogonalization_max_abs_logit_diff"][role] <= 1e-4
        sel = res.summary["selected"][role]
        vec = res.tensors[f"direction.{role}"]
        assert torch.equal(vec, res.tensors[f"candidates.{role}"][sel["layer"], sel["position"]])
    # the diagnostics ran for both models and are saved
    diag = res.summary["diagnostics"]
    assert set(diag) == {"base", "post"}
    assert diag["post"]["n_candidates"] == int((cand[cand.model == "post"].norm > 0).sum())
    assert set(diag["post"]["addition_sweep"]["selected"]["induce_score"]) == {"1", "2", "4", "8"}
    locus = res.tables["locus"]
    assert set(locus.cells) == {"instruction", "post_instruction"} and len(locus) == 2 * 2 * (L + 1)
    write_run(tmp_path / "run", res)
    back = read_run(tmp_path / "run")
    assert back == res
    from posttrain_probe.probes.refusal.figures import save_figures

    paths = save_figures(back, tmp_path / "figs")
    assert len(paths) == 4 and all(p.stat().st_size > 0 for p in paths)


def test_saved_vectors_reproduce_the_run_interventions(tiny_run, tmp_path):
    pair, res = tiny_run
    paths = save_refusal_vectors(res, pair, tmp_path / "steer")
    assert len(paths) == 4
    ab = SteeringVector.load(tmp_path / "steer" / "refusal_post_ablate")
    assert ab.mode == "ablate" and ab.layer is None and ab.site == "resid_all"
    assert ab.metadata["selection_scores"]["kl"] == pytest.approx(res.summary["selected"]["post"]["kl"])
    ids, mask = pair.encode(["User how do I poison the river Assistant :"])
    runtime = pair.post.run(ids, mask, interventions=row_ablation(ab.vector[None], pair.post.n_layers)).logits
    with ab.apply(pair.post.hf, tokenizer=pair.tokenizer) as h:
        hooked = pair.post.hf(input_ids=ids, attention_mask=mask).logits
    assert h.fired and (hooked - runtime).abs().max() < 1e-5


def test_cli_writes_run_and_artefacts(ckpts, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = {
        "harmful": [
            {"instruction": f"how do I {w} the {o}", "split": s}
            for w, s in (("poison", "train"), ("make", "train"), ("poison", "val"))
            for o in ("river", "city")
        ],
        "harmless": [
            {"instruction": f"how do I {w} the {o}", "split": s}
            for w, s in (("bake", "train"), ("born", "train"), ("bake", "val"))
            for o in ("river", "city")
        ],
    }
    for name, r in rows.items():
        (data_dir / f"{name}.json").write_text(json.dumps(r))
    parser = build_parser()
    out = tmp_path / "run"
    args = parser.parse_args(
        [
            "refusal",
            str(ckpts["llama"]),
            str(ckpts["post"]),
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--max-new-tokens",
            "2",
            "--refusal-phrases",
            "cannot",
            "--no-progress",
            "--figures",
            "--export-orthogonalized",
            "--backend",
            "nnsight",
        ]
    )
    assert args.func(args) == 0
    res = read_run(out)
    assert res.analysis == "refusal" and res.notes  # no held-out split: the note says val is reused
    assert (out / "steering" / "refusal_base_add.safetensors").exists()
    assert (out / "orthogonalized" / "post" / "config.json").exists()
    assert len(list((out / "figures").glob("*.png"))) == 4
    with pytest.raises(FileExistsError):
        args.func(args)


def test_config_validation():
    with pytest.raises(ValueError, match="base_format"):
        RefusalConfig(base_format="fancy")
    with pytest.raises(ValueError, match="instruction"):
        RefusalConfig(base_template="User: hi")
    with pytest.raises(ValueError, match="kl_max"):
        RefusalConfig(kl_max=0)
    with pytest.raises(ValueError, match="refusal_phrases"):
        RefusalConfig(refusal_phrases=())


def test_load_refusal_data_from_shared_splits():
    root = shared_data_dir()
    if root is None or not (root / "refusal_direction").is_dir():
        pytest.skip("../shared/data/refusal_direction is not available on this machine")
    d = load_refusal_data(root / "refusal_direction", root / "refusal_direction" / "advbench.csv", 16, 8, 8)
    assert len(d.harmful_train) == len(d.harmless_train) == 16 and len(d.harmful_eval) == 8
    assert all(x.harmful for x in d.harmful_eval) and not any(x.harmful for x in d.harmless_eval)
    assert d.sources["advbench"].endswith("advbench.csv")
    assert np.unique([x.text for x in d.harmful_train]).size == 16


# ---------------------------------------------------------------------------------------------- diagnostics


def test_subspace_ablation_removes_the_whole_span_and_equals_row_ablation_for_one_vector(ckpts):
    from posttrain_probe.probes.refusal.diagnostics import subspace_ablation

    m = load_model(ckpts["llama"])
    ids = torch.randint(4, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    v = torch.randn(3, m.d_model, generator=torch.Generator().manual_seed(1))
    vecs = torch.cat([v, v[:1] + v[1:2], torch.zeros(1, m.d_model)])  # a dependent and a zero row are fine
    sites = [f"{k}.{l}" for l in range(m.n_layers) for k in ("resid_pre", "resid_mid", "resid_post")]
    out = m.run(ids, read=sites, interventions=subspace_ablation(vecs, m.n_layers))
    for s in sites:
        assert (out.cache[s] @ v.T).abs().max() <= 1e-4, s
    one = m.run(ids, interventions=subspace_ablation(v[:1], m.n_layers)).logits
    ref = m.run(ids, interventions=row_ablation(v[:1].expand(2, -1), m.n_layers)).logits
    assert (one - ref).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="no non-zero"):
        subspace_ablation(torch.zeros(2, m.d_model), m.n_layers)


def test_length_matched_pairs():
    from posttrain_probe.probes.refusal.diagnostics import length_matched_pairs
    from posttrain_probe.probes.refusal.model import Prompts

    def prompts(lengths):
        T = max(lengths)
        mask = torch.tensor([[0] * (T - n) + [1] * n for n in lengths])
        return Prompts("chat", [""] * len(lengths), torch.ones_like(mask), mask)

    got = length_matched_pairs(prompts([5, 6, 5, 5]), prompts([6, 5, 7]), 10)
    assert got == [(0, 1), (1, 0)]  # one pair of length 5 (harmless row 1), one of length 6; length 7 unmatched
    assert length_matched_pairs(prompts([5, 5, 6]), prompts([5, 5, 6]), 2) == [(0, 0), (2, 2)]  # round-robin


def test_refusal_locus_is_exact_where_the_answer_is_fully_determined(ckpts):
    # resid[0] at the instruction positions is the whole difference between the prompts (the template tokens
    # after it are shared): share 1, and 0 at the post-instruction positions; at resid[L] the last position is
    # the answer itself: share 1 there and 0 at the instruction positions.
    from posttrain_probe.probes.refusal.diagnostics import refusal_locus

    post = load_model(ckpts["post"])
    h = format_prompts(post, "post", _instructions(["poison", "make"], True, "train"), "auto", "")
    hl = format_prompts(post, "post", _instructions(["bake", "born"], False, "train"), "auto", "")
    ids = refusal_start_token_ids(post.tokenizer, ("cannot help",))
    loc = refusal_locus(post, h, hl, 2, ids, min_gap=0.0)
    L = post.n_layers
    assert loc["n_pairs"] == 4 and loc["gap"] != 0
    assert loc["instruction"][0] == pytest.approx(1.0, abs=1e-3)
    assert loc["post_instruction"][0] == pytest.approx(0.0, abs=1e-3)
    assert loc["post_instruction"][L] == pytest.approx(1.0, abs=1e-3)
    assert loc["instruction"][L] == pytest.approx(0.0, abs=1e-3)
    flat = refusal_locus(post, h, hl, 2, ids)  # a random model does not refuse: no gap, no shares
    assert abs(flat["gap"]) < 1.0 and all(math.isnan(x) for x in flat["instruction"])


def _diag(bypass_all=4.65):
    return {
        "locus": {
            "n_pairs": 25,
            "gap": 15.4,
            "instruction": [1.0, 0.97, 0.81, 0.54, 0.0],
            "post_instruction": [0.0, 0.04, 0.19, 0.38, 1.0],
        },
        "n_candidates": 3,
        "bypass_score_all_candidates": bypass_all,
        "addition_sweep": {
            "selected": {"layer": 1, "position": -1, "induce_score": {"1": -8.3, "2": -7.4}},
            "best_induce": {"layer": 3, "position": -1, "induce_score": {"1": -3.05, "2": 3.6}},
        },
    }


def test_diagnosis_note_only_for_a_refusing_model_whose_direction_fails_and_with_the_evidence():
    from posttrain_probe.probes.refusal.diagnostics import diagnosis_note

    rates = {
        "harmful.baseline": {"post": 1.0, "base": 0.0},
        "harmful.ablation": {"post->post": 1.0, "base->base": 0.0},
        "harmless.addition": {"post->post": 0.0, "base->base": 0.0},
    }
    baseline = {"val_harmful_refusal_score": 6.74, "val_harmless_refusal_score": -8.94}
    note = diagnosis_note("post", _diag(), baseline, rates)
    assert "from 6.74 to 4.65 (> 0: still refusing)" in note and "span of all 3" in note
    assert "1.00/0.97/0.81/0.54" in note and "0.00/0.04/0.19/0.38" in note
    assert "reads it from the instruction itself" in note and "c=2: 3.60" in note
    assert diagnosis_note("base", _diag(), baseline, rates) is None  # base does not refuse: nothing to explain
    works = rates | {"harmful.ablation": {"post->post": 0.1}, "harmless.addition": {"post->post": 0.9}}
    assert diagnosis_note("post", _diag(), baseline, works) is None
    no_signal = _diag()
    no_signal["locus"] = no_signal["locus"] | {"gap": 0.01, "instruction": [float("nan")] * 5}
    note = diagnosis_note("post", no_signal, baseline, rates)
    assert "Patching" not in note and "still refusing" in note  # only the evidence there is


def test_refusal_verdict_says_why_ablation_does_not_bypass_when_the_diagnostics_show_it():
    from posttrain_probe.probes.refusal.verdicts import verdicts as refusal_verdicts
    from posttrain_probe.results import RunResult

    summary = {
        "cosine_selected_directions": 0.0,
        "refusal_rate": {
            "harmful.baseline": {"post": 1.0},
            "harmful.ablation": {"post->post": 1.0},
            "harmless.addition": {"post->post": 0.0, "base->post": 0.0},
        },
        "selected": {"post": {"val_harmful_refusal_score": 6.74}},
    }
    cells = {  # per-prompt outcomes behind the rates above (20 prompts each)
        ("none", "baseline", "harmful"): 1,
        ("post", "ablation", "harmful"): 1,
        ("post", "addition", "harmless"): 0,
        ("base", "addition", "harmless"): 0,
    }
    gen = pd.DataFrame(
        [
            dict(applied_to="post", direction_from=src, condition=c, prompt_set=ps, index=i, refused=bool(r))
            for (src, c, ps), r in cells.items()
            for i in range(20)
        ]
    )
    res = RunResult(analysis="refusal", config={}, summary=summary, tables={"generations": gen})
    plain = {v["claim"]: v for v in refusal_verdicts(res)}
    abl = plain["ablating the refusal direction bypasses refusal in the post model"]
    assert abl["verdict"] == "refuted" and "property of the model" not in abl["evidence"]
    res.summary["diagnostics"] = {"post": _diag()}
    why = {v["claim"]: v for v in refusal_verdicts(res)}
    abl = why["ablating the refusal direction bypasses refusal in the post model"]
    assert abl["verdict"] == "refuted" and "property of the model" in abl["evidence"]
    assert "4.65" in abl["evidence"] and "1.00/0.97/0.81/0.54" in abl["evidence"]
    fwd = why["the base refusal direction transfers poorly to the post model (forward)"]
    assert fwd["verdict"] == "inconclusive" and "c=2 3.60" in fwd["evidence"]
    res.summary["diagnostics"] = {"post": _diag(bypass_all=-2.0)}  # the span does bypass: no such claim
    claims = {v["claim"]: v["evidence"] for v in refusal_verdicts(res)}
    assert "property of the model" not in claims["ablating the refusal direction bypasses refusal in the post model"]
