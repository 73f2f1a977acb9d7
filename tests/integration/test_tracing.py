"""Causal tracing on tiny models: the batched engine across backends, the invariants of tracing (full
restoration gives the clean probability, zero noise gives zero effect), and an end-to-end run that writes a
readable run dir (pure parts: tests/unit/test_tracing.py; against the naive oracle: tests/reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.cli import build_parser
from posttrain_probe.data import Fact
from posttrain_probe.pair import load_model, load_pair
from posttrain_probe.pair.restore import (
    Restorations,
    block_skip_works,
    deferred_unembed_works,
    kv_cache_reuse_works,
    restoration_sites,
    restore,
    run_receiver,
)
from posttrain_probe.probes.tracing import (
    TracingConfig,
    embedding_std,
    prepare_facts,
    run_tracing,
    trace_model,
)
from posttrain_probe.results import read_run, write_run
from posttrain_probe.testing import make_tiny_checkpoint

SUBJECTS = ["city of river", "bread", "river", "make bread", "year of zero", "two three", "poison", "country"]
TEMPLATES = ["the {} is in", "{} was born in the", "how do I {} at", "a {} lives with", "the {} works for"]
PROMPTS = [(t.format(s), s) for t in TEMPLATES for s in SUBJECTS]
N_FACTS = 6

# ---------------------------------------------------------------------------------------------- pure parts


# ---------------------------------------------------------------------------------------------- tiny models


def _sharp_checkpoint(path, seed: int, scale: float = 40.0, perturb: float = 0.0):
    """A tiny Llama whose unembedding is scaled up, so predictions are peaked and effects are large."""
    make_tiny_checkpoint("llama", path, seed=seed)
    hf = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        hf.lm_head.weight.mul_(scale)
        if perturb:
            g = torch.Generator().manual_seed(seed + 100)
            for p in hf.model.layers.parameters():
                p.add_(perturb * torch.randn(p.shape, generator=g))
    hf.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracing")
    base = _sharp_checkpoint(root / "base", seed=0)
    post = _sharp_checkpoint(root / "post", seed=0, perturb=0.02)
    return base, post


@pytest.fixture(scope="module")
def models(ckpts):
    return {b: load_model(ckpts[0], backend=b) for b in ("nnsight", "bridge")}


def _facts(model) -> list[Fact]:
    """Facts whose answer is the model's greedy next token, kept when that token is a plain word."""
    tok = model.tokenizer
    words = [i for w, i in tok.get_vocab().items() if w.isalpha() and w.islower() and not w.startswith("w")]
    out = []
    for p, s in PROMPTS:
        ids = tok(p, return_tensors="pt")["input_ids"]
        a = int(model.run(ids).logits[0, -1].argmax())
        if a in words:
            out.append(Fact(prompt=p, subject=s, answer=" " + tok.convert_ids_to_tokens(a), id=p))
        if len(out) == N_FACTS:
            return out
    raise AssertionError("the tiny model predicts too few plain words; change the seed of the fixture")


def test_bridge_and_nnsight_agree(models):
    out = {}
    for backend, m in models.items():
        prepared, _ = prepare_facts(m.tokenizer, _facts(models["nnsight"])[:3])
        sigma = 3 * embedding_std(m, [f.fact.subject for f in prepared])
        reuse = kv_cache_reuse_works(m)
        out[backend] = trace_model(m, prepared, sigma, n_samples=2, window=1, kv_reuse=reuse, progress=False)
    for k in ("resid", "mlp", "attn"):
        a, b = out["nnsight"].ie[k], out["bridge"].ie[k]
        assert torch.allclose(a, b, atol=1e-5, equal_nan=True)
    assert torch.allclose(out["nnsight"].p_corrupted, out["bridge"].p_corrupted, atol=1e-6)


def test_restoring_the_last_token_at_the_last_layer_gives_the_clean_probability(models):
    """That cell restores everything the prediction depends on (the oracle's own check of full restoration:
    tests/reference)."""
    m = models["nnsight"]
    (f,), _ = prepare_facts(m.tokenizer, _facts(m)[:1])
    L, T = m.n_layers, f.n_tokens
    p_clean = torch.softmax(m.run(f.ids[None]).logits[0, -1], -1)[f.answer_id].item()
    tr = trace_model(m, [f], 0.5, n_samples=4, window=1, progress=False)
    assert abs(tr.p_corrupted[0].item() - p_clean) > 1e-3  # the noise does change the prediction
    cell = tr.ie["resid"][0, T - 1, L - 1] + tr.p_corrupted[0]
    assert cell.item() == pytest.approx(p_clean, abs=1e-5)


def test_resume_at_skips_the_blocks_below_and_gives_the_full_forwards_logits(models):
    m = models["nnsight"]
    assert block_skip_works(m)
    ids = torch.tensor([[3, 10, 17, 24, 31]])
    full = m.run(ids, read=["resid_pre.1"])
    calls = []
    handle = m.hf.model.layers[0].mlp.register_forward_hook(lambda *a: calls.append(1))
    try:
        part = m.run(ids, resume_at=(1, full.cache["resid_pre.1"]), read=["resid_post.1"])
    finally:
        handle.remove()
    assert not calls  # block 0 did not run (its MLP never ran)
    assert torch.allclose(part.logits, full.logits, atol=1e-5)
    assert not torch.allclose(
        m.run(ids, resume_at=(1, torch.zeros_like(full.cache["resid_pre.1"]))).logits, full.logits
    )
    with pytest.raises(ValueError, match="resid_post.0"):
        m.run(ids, resume_at=(1, full.cache["resid_pre.1"]), read=["resid_post.0"])
    bridge = models["bridge"]
    assert not block_skip_works(bridge)
    with pytest.raises(ValueError, match="cannot skip blocks"):
        bridge.run(ids, resume_at=(1, full.cache["resid_pre.1"]))


def test_a_model_that_changes_logits_after_its_output_embedding_is_not_unembedded_afterwards(tmp_path):
    """Gemma-2 soft-caps its logits after the output embedding: skipping blocks works, deferring the head not."""
    m = load_model(make_tiny_checkpoint("gemma2", tmp_path / "g2"), backend="nnsight")
    assert m.hf.config.final_logit_softcapping
    assert block_skip_works(m) and not deferred_unembed_works(m)


def test_restorations_resumed_at_their_lowest_block_equal_full_forwards(models, monkeypatch):
    """Every grouping of the resumed rows (one forward per lowest block, or one for all) and no resuming give
    the same log-probs, on noise at the first tokens and every kind of site set of a 4-layer model."""
    m = models["nnsight"]
    L, T, n = m.n_layers, 6, 3
    ids = (torch.arange(T)[None] * 5 + 3).repeat(n, 1)  # (n, T)
    tok = torch.full((n, 1), 7)
    noise = torch.zeros(n, T, m.d_model)
    noise[:, 1:3] = torch.randn(n, 2, m.d_model, generator=torch.Generator().manual_seed(0))
    sets = list(dict.fromkeys(restoration_sites(k, l, L, 3) for k in ("resid", "mlp", "attn") for l in range(L)))
    grid = torch.cartesian_prod(torch.arange(n), torch.arange(1, T), torch.arange(len(sets)))
    rows = Restorations(grid[:, 0], torch.zeros_like(grid[:, 0]), grid[:, 1], grid[:, 2], sets)
    src = m.run(ids[:1], read=[s for ss in sets for s in ss]).cache
    forwards = []
    run = m.run
    monkeypatch.setattr(m, "run", lambda *a, **kw: forwards.append(kw.get("resume_at", (0,))[0]) or run(*a, **kw))
    out = {}
    for skip, overhead in ((False, 32), (True, 0), (True, 10**6)):
        rec = run_receiver(m, ids, tok, {"resid_pre.0": noise}, True, skip)
        forwards.clear()
        out[skip, overhead] = restore(m, rec, src, rows, tok, block_overhead_tokens=overhead)
        if skip and overhead == 0:
            assert sorted(set(forwards)) == list(range(L))  # every lowest block has its own forward
        else:
            assert set(forwards) == {0}
    ref = out[False, 32]
    assert (ref - out[True, 0]).abs().max() < 1e-5 and (ref - out[True, 10**6]).abs().max() < 1e-5
    assert (ref - ref.mean()).abs().max() > 1e-3  # the restorations differ from each other


def test_zero_noise_gives_zero_effect(models):
    m = models["nnsight"]
    prepared, _ = prepare_facts(m.tokenizer, _facts(m)[:2])
    tr = trace_model(m, prepared, 0.0, n_samples=2, window=3, progress=False)
    for k, ie in tr.ie.items():
        assert torch.nan_to_num(ie).abs().max().item() < 1e-6, k
    assert torch.allclose(tr.p_clean, tr.p_corrupted, atol=1e-6)


# ---------------------------------------------------------------------------------------------- end to end


def test_run_tracing_identical_models_give_zero_difference(ckpts, models):
    pair = load_pair(ckpts[0], ckpts[0], backend="nnsight")
    facts = _facts(pair.base) + [Fact(prompt="the city of river", subject="city", answer=" is")]
    facts.append(Fact(prompt="bread is in the", subject="bread", answer=" w5"))  # answer starts with <unk>
    res = run_tracing(pair, facts, TracingConfig(n_samples=2, window=1, n_boot=50, progress=False))
    s = res.summary
    assert s["n_skipped"] == 1 and "unknown token" in res.tables["skipped"]["reason"][0]
    assert s["n_known"]["base"] == s["n_known"]["post"] == s["n_common"] >= N_FACTS
    for k in ("resid", "mlp", "attn"):
        assert s["pearson_base_post"][k]["class_map"] == pytest.approx(1.0, abs=1e-6)
        diff = res.tensors[f"aie.common.base_minus_post.{k}"]
        assert torch.nan_to_num(diff).abs().max() == 0
    assert s["noise"]["sigma_used"]["base"] == s["noise"]["sigma_used"]["post"]


def test_run_tracing_writes_a_readable_run_with_figures(tmp_path, ckpts, models):
    pair = load_pair(*ckpts, backend="bridge")
    facts = _facts(pair.base)
    cfg = TracingConfig(n_samples=2, window=1, n_boot=50, progress=False, noise_calibration="per_model")
    res = run_tracing(pair, facts, cfg, data_source="test")
    write_run(tmp_path / "run", res)
    back = read_run(tmp_path / "run")
    assert back.analysis == "causal_tracing"
    s = back.summary
    assert s["noise"]["sigma_used"]["post"] == pytest.approx(s["noise"]["embedding_std"]["post"])
    L = pair.base.n_layers
    for r in ("base", "post"):
        assert np.array(s["aie"]["own"][r]["mlp"]).shape == (6, L)
        assert back.tensors[f"ie.{r}.mlp"].shape[0] == s["n_known"][r]
        if s["n_known"][r]:
            assert s["mlp_peak"][r]["token_class"] in s["token_classes"]
    aie = back.tables["aie"]
    assert set(aie["scope"]) == {"own", "common"}
    finite = aie.dropna(subset=["ci_lo", "ci_hi", "aie"])
    assert len(finite) and (finite["ci_lo"] <= finite["ci_hi"] + 1e-9).all()
    from posttrain_probe.probes.tracing.figures import save_figures

    paths = save_figures(back, tmp_path / "figs")
    assert paths and all(p.stat().st_size > 0 for p in paths)


def test_cli_trace_runs_on_a_facts_file(tmp_path, ckpts, models):
    facts = _facts(models["nnsight"])
    rows = [
        {"known_id": i, "subject": f.subject, "attribute": f.answer.strip(), "prompt": f.prompt}
        for i, f in enumerate(facts)
    ]
    (tmp_path / "facts.json").write_text(json.dumps(rows))
    parser = build_parser()
    flags = "--n-samples 2 --window 1 --n-boot 20 --no-progress --backend nnsight".split()
    data, out = str(tmp_path / "facts.json"), str(tmp_path / "o")
    args = parser.parse_args(["trace", str(ckpts[0]), str(ckpts[1]), "--data", data, "--out", out, *flags])
    assert args.func(args) == 0
    assert read_run(tmp_path / "o").summary["n_facts_loaded"] == len(facts)
    with pytest.raises(FileExistsError, match="--force"):
        args.func(args)
