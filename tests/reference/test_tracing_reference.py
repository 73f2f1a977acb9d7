"""Batched causal tracing against the independent naive oracle of this folder (plain HF hooks, its own noise),
cell by cell, on tiny random-init models sharpened so the effects are not ≈ 0."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain_probe.data import Fact
from posttrain_probe.pair import load_model
from posttrain_probe.pair.restore import block_skip_works, kv_cache_reuse_works
from posttrain_probe.probes.tracing import embedding_std, prepare_facts, trace_model
from posttrain_probe.testing import make_tiny_checkpoint
from tests.reference import naive_tracing

SUBJECTS = ["city of river", "bread", "river", "make bread", "year of zero", "two three", "poison", "country"]
TEMPLATES = ["the {} is in", "{} was born in the", "a {} lives with"]
ATOL = 1e-5


def _sharp(family: str, path, seed: int = 0, n_layers: int = 4, scale: float = 40.0):
    """A tiny random-init model whose final norm is scaled up: peaked predictions, large restoration effects."""
    make_tiny_checkpoint(family, path, seed=seed, n_layers=n_layers)
    hf = AutoModelForCausalLM.from_pretrained(path)
    norm = hf.model.norm if family == "llama" else hf.transformer.ln_f
    with torch.no_grad():
        for p in norm.parameters():
            p.mul_(scale)
    hf.save_pretrained(path)
    return path


# family, backend, final-norm scale, noise in embedding stds (GPT-2's random init passes little from the subject)
SETUPS = [("llama", "nnsight", 40.0, 3.0), ("gpt2", "bridge", 15.0, 10.0)]


@pytest.fixture(scope="module", params=SETUPS, ids=lambda p: f"{p[0]}-{p[1]}")
def traced(request, tmp_path_factory):
    """(fast model, plain HF model, prepared facts, noise scale) for one setup; answers are the greedy tokens."""
    family, backend, norm_scale, noise_scale = request.param
    path = _sharp(family, tmp_path_factory.mktemp("ref") / family, scale=norm_scale)
    m = load_model(path, backend=backend)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = m.tokenizer
    facts = []
    for t in TEMPLATES:
        for s in SUBJECTS:
            prompt = t.format(s)
            ids = torch.tensor(tok(prompt)["input_ids"])
            a = int(naive_tracing.last_logits(hf, ids[None])[0].argmax())
            word = tok.convert_ids_to_tokens(a)
            if word.isalpha() and not word.startswith("w"):  # "w12" tokenizes as <unk> 1 2
                facts.append(Fact(prompt=prompt, subject=s, answer=" " + word, id=prompt))
    prepared, skipped = prepare_facts(tok, facts[:2])
    assert len(prepared) == 2 and not skipped
    for f in prepared:  # the subject span the oracle is handed is the subject's words
        assert tok.decode(f.ids[f.subject[0] : f.subject[1]]) == f.fact.subject
    return m, hf, prepared, noise_scale


def test_embedding_std_equals_the_oracles(traced):
    m, hf, prepared, noise_scale = traced
    texts = [f.fact.subject for f in prepared] + ["the city of river is in", "bread"]
    assert embedding_std(m, texts) == pytest.approx(naive_tracing.embedding_std(hf, m.tokenizer, texts), rel=1e-5)


@pytest.mark.parametrize(
    "skip, cache", [(False, True), (True, True), (True, False)], ids=["all-blocks", "skip-blocks", "skip-no-cache"]
)
def test_batched_tracing_equals_the_naive_oracle_on_every_cell(traced, skip, cache):
    """Window 3 on 4 layers: clipped at both ends, and the mlp/attn restorations write several layers; rows
    run every block, or (nnsight) resume at their lowest restored block from the corrupted run, on top of its
    KV cache or feeding the whole prompt."""
    m, hf, prepared, noise_scale = traced
    assert block_skip_works(m) == (m.backend == "nnsight")
    if skip and m.backend != "nnsight":
        pytest.skip("the bridge cannot skip blocks")
    window = 3
    sigma = noise_scale * naive_tracing.embedding_std(hf, m.tokenizer, [f.fact.subject for f in prepared])
    reuse = cache and kv_cache_reuse_works(m)
    tr = trace_model(
        m, prepared, sigma, n_samples=3, window=window, seed=7, kv_reuse=reuse, progress=False, skip_blocks=skip
    )
    biggest = 0.0
    for j, f in enumerate(prepared):
        cells = range(max(0, f.subject[0] - 1), f.n_tokens)  # one token before the subject (a no-op) onwards
        ie, p_clean, p_corr = naive_tracing.trace_fact(
            hf, f.ids, f.subject, f.answer_id, f.index, sigma, n_samples=3, window_size=window, seed=7, positions=cells
        )
        assert tr.p_clean[j].item() == pytest.approx(p_clean, abs=ATOL)
        assert tr.p_corrupted[j].item() == pytest.approx(p_corr, abs=ATOL)
        assert abs(p_clean - p_corr) > 1e-3  # the noise changes the prediction
        for k, ref in ie.items():
            got = tr.ie[k][j, cells.start : f.n_tokens]
            ref = ref[cells.start :]
            assert torch.allclose(got, ref, atol=ATOL), (k, (got - ref).abs().max().item())
            biggest = max(biggest, ref.abs().max().item())
    assert biggest > 1e-2  # the comparison is not between two maps of zeros


def test_a_noise_site_or_seed_other_than_the_documented_one_is_caught(traced):
    """The oracle sees a change of the noise convention: another seed, or the noise one token later."""
    m, hf, prepared, noise_scale = traced
    f = prepared[0]
    sigma = noise_scale * naive_tracing.embedding_std(hf, m.tokenizer, [f.fact.subject])
    tr = trace_model(m, [f], sigma, n_samples=3, window=1, seed=0, progress=False)
    shifted = (f.subject[0] + 1, f.subject[1] + 1)
    assert shifted[1] < f.n_tokens
    for subject, seed in ((f.subject, 0), (f.subject, 1), (shifted, 0)):
        _, _, p_corr = naive_tracing.trace_fact(
            hf, f.ids, subject, f.answer_id, f.index, sigma, n_samples=3, seed=seed, positions=()
        )
        same = abs(tr.p_corrupted[0].item() - p_corr) <= ATOL
        assert same == (subject == f.subject and seed == 0), (subject, seed)


def test_the_oracle_restoring_a_whole_layer_gives_the_clean_probability(traced):
    """The oracle's own invariant: writing block l's clean output at every position undoes the noise."""
    m, hf, prepared, noise_scale = traced
    f = prepared[0]
    sigma = noise_scale * naive_tracing.embedding_std(hf, m.tokenizer, [f.fact.subject])
    _, p_clean, p_corr = naive_tracing.trace_fact(hf, f.ids, f.subject, f.answer_id, f.index, sigma, positions=())
    assert abs(p_clean - p_corr) > 1e-3
    _, clean = naive_tracing.clean_run(hf, f.ids[None])
    modules = naive_tracing.site_modules(hf)
    z = naive_tracing.noise(f.index, 4, f.subject[1] - f.subject[0], clean["resid.0"].shape[-1], seed=0)
    add = torch.zeros(4, f.n_tokens, z.shape[-1])
    add[:, f.subject[0] : f.subject[1]] = sigma * z
    batch = f.ids[None].repeat(4, 1)
    for l in range(len(naive_tracing.blocks(hf))):
        writes = [(modules[f"resid.{l}"], range(f.n_tokens), clean[f"resid.{l}"][0])]
        p = naive_tracing.answer_prob(hf, batch, f.answer_id, add=add, writes=writes)
        assert p == pytest.approx(p_clean, abs=ATOL)
